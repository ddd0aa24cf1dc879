"""RLHF Lab: preference data, reward model, PPO and comparison, one click at a time."""

__version__ = "0.1.0"
