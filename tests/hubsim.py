"""A simulated Hugging Face hub: tiny random stand-ins saved in the hub cache layout under the `a100` preset's ids.

`build_hub(cache, smol_tokenizer_dir)` writes, in seconds and without network, what `HF_HUB_CACHE` holds after the
Space downloaded its models and data:

- `HuggingFaceH4/zephyr-7b-alpha`: a 2-layer random Mistral with zephyr's chat template (SmolLM2's tokenizer);
- `distilroberta-base` (a legacy one-part id): a 2-layer random RoBERTa masked LM with a byte-level BPE tokenizer;
- `facebook/roberta-hate-speech-dynabench-r4-target`: a RoBERTa classifier with labels nothate / hate;
- `OpenAssistant/reward-model-deberta-v3-large-v2` (the a100 judge): a 2-layer random DeBERTa-v2 sequence classifier
  with one output, like the real one (the tokenizer is the byte-level BPE above, not DeBERTa's SentencePiece: the
  lab loads both through AutoTokenizer);
- `sentence-transformers/all-MiniLM-L6-v2` (the a100 relevance encoder): a 2-layer random BERT with a WordPiece
  vocabulary of the demo data's words;
- datasets `Anthropic/hh-rlhf` (`<subset>/{train,test}.jsonl.gz`, harmless-base first as in the real repo) and
  `allenai/real-toxicity-prompts` (`prompts.jsonl`, nested `prompt.text`), built from the bundled demo data.

Layout per repo: `<type>s--owner--name/{blobs/<sha256>, refs/main, snapshots/<commit>/<file> -> ../../blobs/...}`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "data"
ZEPHYR = "HuggingFaceH4/zephyr-7b-alpha"
ROBERTA_BASE = "distilroberta-base"
HATE = "facebook/roberta-hate-speech-dynabench-r4-target"
JUDGE = "OpenAssistant/reward-model-deberta-v3-large-v2"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
HH = "Anthropic/hh-rlhf"
RTP = "allenai/real-toxicity-prompts"
HH_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
# zephyr-7b-alpha's tokenizer_config.json chat template
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}


def repo_folder(cache: Path, repo_id: str, repo_type: str = "model") -> Path:
    return Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def save_repo(cache: Path, repo_id: str, files: Path, repo_type: str = "model") -> Path:
    """Copy the files under `files` into the cache as one commit of `repo_id`; returns the snapshot folder."""
    repo = repo_folder(cache, repo_id, repo_type)
    items = sorted(p for p in Path(files).rglob("*") if p.is_file())
    commit = hashlib.sha1(b"".join(p.read_bytes() for p in items)).hexdigest()
    snapshot = repo / "snapshots" / commit
    for path in items:
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(files)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def _zephyr(out: Path, smol_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    tok.chat_template = ZEPHYR_TEMPLATE
    config = MistralConfig(vocab_size=len(tok), num_key_value_heads=2, max_position_embeddings=1024,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, sliding_window=None,
                           tie_word_embeddings=False, **TINY)
    MistralForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)


def _roberta_tokenizer(out: Path) -> None:
    """A byte-level BPE tokenizer with RoBERTa's special tokens, trained on the demo data (a second)."""
    from tokenizers import ByteLevelBPETokenizer

    texts = [line for f in sorted(DEMO.glob("*.jsonl")) for line in f.read_text().splitlines()]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(out))  # vocab.json + merges.txt, as distilroberta-base ships them
    from transformers import RobertaTokenizer

    RobertaTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=512).save_pretrained(out)


def _roberta(out: Path, classifier: bool, max_positions: int = 514) -> None:
    from transformers import AutoTokenizer, RobertaConfig, RobertaForMaskedLM, RobertaForSequenceClassification

    _roberta_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(out)
    extra = {"id2label": {0: "nothate", 1: "hate"}, "label2id": {"nothate": 0, "hate": 1}} if classifier else {}
    config = RobertaConfig(vocab_size=len(tok), max_position_embeddings=max_positions, type_vocab_size=1,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2, **TINY, **extra)
    model = (RobertaForSequenceClassification if classifier else RobertaForMaskedLM)(config)
    model.save_pretrained(out)


def _judge(out: Path) -> None:
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2ForSequenceClassification

    _roberta_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(out)
    config = DebertaV2Config(vocab_size=len(tok), max_position_embeddings=512, type_vocab_size=0, num_labels=1,
                             pad_token_id=tok.pad_token_id, **TINY)
    DebertaV2ForSequenceClassification(config).save_pretrained(out)


def _sentence_encoder(out: Path) -> None:
    """A BERT encoder (no head) with a WordPiece tokenizer of the demo data's 500 commonest words, as the hub's
    sentence-transformers repos hold one."""
    import collections
    import re

    from transformers import BertConfig, BertModel, BertTokenizer

    words = collections.Counter(w for f in sorted(DEMO.glob("*.jsonl"))
                                for w in re.findall(r"[a-z]+", f.read_text().lower()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for w, _ in words.most_common(500)]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(out / "vocab.txt"), model_max_length=512).save_pretrained(out)
    BertModel(BertConfig(vocab_size=len(vocab), max_position_embeddings=512, **TINY)).save_pretrained(out)


def _jsonl_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows).encode())
    path.write_bytes(buf.getvalue())


def _read(name: str) -> list[dict]:
    return [json.loads(line) for line in (DEMO / name).read_text().splitlines() if line.strip()]


def _hh(out: Path) -> None:
    """The bundled pairs dealt round-robin into hh-rlhf's four subsets, train and test, plus red-team-attempts
    (which has no chosen/rejected and must never be read as pairs)."""
    for split, name in (("train", "pairs_train.jsonl"), ("test", "pairs_test.jsonl")):
        rows = [{"chosen": r["chosen"], "rejected": r["rejected"]} for r in _read(name)]  # hh-rlhf's own two columns:
        for k, subset in enumerate(HH_SUBSETS):  # the folder is the only label, as on the hub
            _jsonl_gz(out / subset / f"{split}.jsonl.gz", rows[k :: len(HH_SUBSETS)])
    red = [{"transcript": r["chosen"], "min_harmlessness_score_transcript": 0.0, "rating": 1}
           for r in _read("pairs_train.jsonl")[:5]]
    _jsonl_gz(out / "red-team-attempts" / "red_team_attempts.jsonl.gz", red)
    (out / "README.md").write_text("---\nlicense: mit\n---\n# hh-rlhf (simulated)\n")


def _rtp(out: Path) -> None:
    rows = []
    for i, row in enumerate(_read("prompts.jsonl") + _read("prompts_test.jsonl")):
        words = row["prompt"].split()
        cut = max(1, len(words) // 2)
        rows.append({"filename": f"{i:07d}.txt", "begin": 0, "end": len(row["prompt"]), "challenging": i % 3 == 0,
                     "prompt": {"text": " ".join(words[:cut]), "toxicity": 0.1, "profanity": 0.05},
                     "continuation": {"text": " " + " ".join(words[cut:]), "toxicity": 0.1}})
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "README.md").write_text("---\nlicense: apache-2.0\n---\n# real-toxicity-prompts (simulated)\n")


def build_hub(cache: Path, smol_tokenizer_dir: Path) -> Path:
    """Write every stand-in into the hub cache folder `cache` (HF_HUB_CACHE); returns it."""
    torch.manual_seed(0)
    cache = Path(cache)
    builders = [
        (ZEPHYR, "model", lambda out: _zephyr(out, smol_tokenizer_dir)),
        (ROBERTA_BASE, "model", lambda out: _roberta(out, classifier=False)),
        (HATE, "model", lambda out: _roberta(out, classifier=True)),
        (JUDGE, "model", _judge),
        (MINILM, "model", _sentence_encoder),
        (HH, "dataset", _hh),
        (RTP, "dataset", _rtp),
    ]
    for repo_id, repo_type, build in builders:
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp))
            save_repo(cache, repo_id, Path(tmp), repo_type)
    return cache


def hub_env(home: Path) -> dict[str, str]:
    """Environment variables that make a process read the simulated hub offline."""
    return {"HF_HOME": str(home), "HF_HUB_CACHE": str(Path(home) / "hub"), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
