"""RLHF Lab — the Space entry point. Honours GRADIO_SERVER_PORT / GRADIO_SERVER_NAME; models load lazily."""

from lab.cli import app

if __name__ == "__main__":
    app()
