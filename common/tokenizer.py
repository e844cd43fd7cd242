"""
Text <-> token ids. Three tokenizers with one interface (encode, decode, vocab_size, meta):

    from common.tokenizer import load_tokenizer
    tok = load_tokenizer({"kind": "gpt2"})       # or {"kind": "char", "chars": "abc..."}, or a "bpe" meta
    ids = tok.encode("Hello world")              # [15496, 995]
    tok.decode(ids)                              # "Hello world"

A dataset's meta.json, and a checkpoint's "tokenizer" entry, hold the dict that load_tokenizer takes
(each tokenizer's .meta), so every script turns text into the model's tokens the same way.
"""

import functools

import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public

from common import bpe
from common.cli import UserError
from common.sources import local_copy
from common.files import sha256

EOT = "<|endoftext|>"  # the document boundary of the byte-level tokenizers


class CharTokenizer:
    """One token per character of a fixed alphabet, as in char-rnn and nanoGPT's shakespeare_char."""

    def __init__(self, chars):
        self.chars = "".join(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars)
        self.meta = {"kind": "char", "chars": self.chars}

    @classmethod
    def from_text(cls, text):
        """The alphabet of a corpus: its distinct characters, sorted."""
        return cls(sorted(set(text)))

    def encode(self, text):
        unknown = set(text) - self.stoi.keys()
        if unknown:
            raise UserError(f"text holds characters outside the tokenizer's {self.vocab_size}-character "
                            f"vocabulary: {''.join(sorted(unknown))!r}")
        return [self.stoi[c] for c in text]

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)


class TiktokenTokenizer:
    """A byte-level BPE through tiktoken. encode treats "<|endoftext|>" in a text as ordinary
    characters, so no text can smuggle in a document boundary; append eot_token yourself where one
    document ends and the next begins."""

    def __init__(self, encoding, meta):
        self.encoding = encoding
        self.vocab_size = encoding.n_vocab  # the 256 bytes, one token per merge, and <|endoftext|>
        self.eot_token = encoding.eot_token
        self.meta = meta

    def encode(self, text):
        return self.encoding.encode_ordinary(text)

    def decode(self, ids):
        return self.encoding.decode(list(ids))


class GPT2Tokenizer(TiktokenTokenizer):
    """GPT-2's own: 256 bytes + 50,000 merges + <|endoftext|> = 50,257 tokens."""

    def __init__(self, encoding):
        super().__init__(encoding, {"kind": "gpt2"})


class BPETokenizer(TiktokenTokenizer):
    """A byte-level BPE learned by common/bpe.py, GPT-2's pre-tokenizer and <|endoftext|> after the
    merges. Its meta holds the merges themselves, so a checkpoint's "tokenizer" entry is enough to
    rebuild it: "merges" is "left right left right ..." (two ids a merge, in learned order)."""

    def __init__(self, merges):
        ranks = bpe.mergeable_ranks(merges)
        encoding = tiktoken.Encoding(name=f"bpe{len(ranks) + 1}", pat_str=bpe.GPT2_PATTERN,
                                     mergeable_ranks=ranks, special_tokens={EOT: len(ranks)})
        super().__init__(encoding, {"kind": "bpe", "merges": " ".join(f"{a} {b}" for a, b in merges)})

    @classmethod
    def from_meta(cls, meta, source):
        """The tokenizer a "bpe" meta describes, once its merges are checked: pairs of integer ids, each
        joining two tokens that exist before it (the 256 bytes, then one token per earlier merge).
        source names the file in messages."""
        words = meta.get("merges")
        ids = words.split() if isinstance(words, str) else None
        if ids is None or len(ids) % 2 or not all(i.isascii() and i.isdigit() for i in ids):
            raise UserError(f"{source}: a bpe tokenizer's \"merges\" must be a string of pairs of token ids, "
                            f"\"left right left right ...\"; it is damaged")
        merges = list(zip(map(int, ids[0::2]), map(int, ids[1::2])))
        for k, pair in enumerate(merges):
            if max(pair) >= 256 + k:
                raise UserError(f"{source}: bpe merge {k} joins token {max(pair)}, which no earlier merge made; "
                                f"it is damaged")
        try:
            return cls(merges)
        except ValueError as e:  # two merges that make the same bytes (bpe.mergeable_ranks)
            raise UserError(f"{source}: {e}; it is damaged") from None


# the sha256 of OpenAI's files, the same that tiktoken checks when it downloads them
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


@functools.lru_cache(maxsize=1)  # reading the 50,000 merges takes a moment; every caller shares one
def gpt2_tokenizer():
    """GPT-2's tokenizer from local copies of OpenAI's encoder.json and vocab.bpe (gpt2_bpe/ under
    $GPT_DATA_DIR or ../shared/data); only without them does tiktoken download its own."""
    encoder_json, vocab_bpe = local_copy("gpt2_bpe/encoder.json"), local_copy("gpt2_bpe/vocab.bpe")
    if encoder_json is None or vocab_bpe is None:
        try:
            return GPT2Tokenizer(tiktoken.get_encoding("gpt2"))
        except Exception as e:  # the download's errors come from requests, which we don't import
            raise UserError(f"GPT-2's BPE files are not in gpt2_bpe/ under GPT_DATA_DIR or ../shared/data, "
                            f"and tiktoken could not download them ({type(e).__name__})") from None
    if (sha256(vocab_bpe), sha256(encoder_json)) != (VOCAB_BPE_SHA256, ENCODER_JSON_SHA256):
        raise UserError(f"{vocab_bpe.parent}: encoder.json or vocab.bpe differs from OpenAI's GPT-2 files")
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(vocab_bpe),
                                                         encoder_json_file=str(encoder_json))
    encoding = tiktoken.Encoding(name="gpt2", pat_str=tiktoken_ext.openai_public.r50k_pat_str,
                                 mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
    return GPT2Tokenizer(encoding)


def load_tokenizer(meta, source="the tokenizer's description"):
    """The tokenizer a meta dict describes: {"kind": "char", "chars": ...}, {"kind": "gpt2"} or
    {"kind": "bpe", "merges": ...}. source names where meta came from (a meta.json, a checkpoint) in
    error messages."""
    if not isinstance(meta, dict):
        raise UserError(f"{source} holds a {type(meta).__name__}, not a tokenizer such as {{\"kind\": \"gpt2\"}}")
    kind = meta.get("kind")
    if kind == "char":
        if not isinstance(meta.get("chars"), str) or not meta["chars"]:
            raise UserError(f"{source}: a char tokenizer needs its alphabet, a non-empty string \"chars\"")
        return CharTokenizer(meta["chars"])
    if kind == "gpt2":
        return gpt2_tokenizer()
    if kind == "bpe":
        return BPETokenizer.from_meta(meta, source)
    raise UserError(f"{source}: unknown tokenizer kind {kind!r}; expected 'char', 'gpt2' or 'bpe'")
