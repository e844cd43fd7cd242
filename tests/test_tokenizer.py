"""The tokenizers: the character one on hand-made cases, GPT-2's (built offline from local files)
against known GPT-2 ids and against OpenAI's own BPE algorithm written out independently below.
GPT-2's files (1.5 MB) are not in the repository: those tests skip where neither $GPT_DATA_DIR nor
../shared/data holds gpt2_bpe/."""

import json

import pytest
import regex
import tiktoken

import common.tokenizer
from common import sources
from common.cli import UserError
from common.files import sha256
from common.tokenizer import CharTokenizer, gpt2_tokenizer, load_tokenizer
from conftest import FIXTURE_DATA, real_data


def gpt2_files():
    """OpenAI's encoder.json and vocab.bpe, or a skip that names them."""
    return real_data("gpt2_bpe/encoder.json", "gpt2_bpe/vocab.bpe")


def test_char_round_trip_and_sorted_alphabet():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == " dehlorw"
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode(tok.encode("world hello")) == "world hello"
    assert tok.vocab_size == 8


def test_char_unknown_characters_are_named():
    tok = CharTokenizer("abc")
    with pytest.raises(UserError, match=r"'xz'"):
        tok.encode("abzcx")


def test_load_tokenizer_by_kind(monkeypatch):
    tok = load_tokenizer({"kind": "char", "chars": "ab"})
    assert tok.encode("ba") == [1, 0] and tok.meta == {"kind": "char", "chars": "ab"}
    gpt2 = object()  # whatever gpt2_tokenizer() builds (tested below), load_tokenizer hands on
    monkeypatch.setattr(common.tokenizer, "gpt2_tokenizer", lambda: gpt2)
    assert load_tokenizer({"kind": "gpt2"}) is gpt2
    with pytest.raises(UserError, match="unknown tokenizer kind 'sentencepiece'"):
        load_tokenizer({"kind": "sentencepiece"})


@pytest.fixture(scope="module")
def local_gpt2():
    """GPT-2's tokenizer built afresh (not the cached one) with downloading made impossible, so the
    tests prove it comes from the local files."""
    gpt2_files()

    def no_download(name):
        raise AssertionError(f"tried to download {name}")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(tiktoken, "get_encoding", no_download)
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # read the files themselves, not tiktoken's cached copy
        return gpt2_tokenizer.__wrapped__()


def test_gpt2_known_ids(local_gpt2):
    known = {"Hello world": [15496, 995], "Hello, world!": [15496, 11, 995, 0],
             "<|endoftext|>": [27, 91, 437, 1659, 5239, 91, 29]}  # the last is ordinary text, not the special token
    for text, ids in known.items():
        assert local_gpt2.encode(text) == ids, text
        assert local_gpt2.decode(ids) == text


def test_gpt2_vocabulary(local_gpt2):
    assert local_gpt2.vocab_size == 50257
    assert local_gpt2.eot_token == 50256
    assert local_gpt2.decode([local_gpt2.eot_token]) == "<|endoftext|>"


def openai_bpe_encoder():
    """GPT-2's encoder as OpenAI's gpt-2/src/encoder.py writes it: bytes mapped to printable
    characters, the pre-tokenizer regex, then the lowest-ranked merge applied until none is left."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    byte_to_char = {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(others)}
    encoder_json, vocab_bpe = gpt2_files()
    encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
    merges = vocab_bpe.read_text(encoding="utf-8").split("\n")[1:-1]
    ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
    pattern = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def bpe(word):
        word = list(word)
        while len(word) > 1:
            pair = min(zip(word, word[1:]), key=lambda p: ranks.get(p, float("inf")))
            if pair not in ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if tuple(word[i : i + 2]) == pair:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode(text):
        pieces = ("".join(byte_to_char[b] for b in piece.encode("utf-8")) for piece in pattern.findall(text))
        return [encoder[token] for piece in pieces for token in bpe(piece)]

    return encode


def test_gpt2_matches_openai_algorithm(local_gpt2):
    shakespeare = (FIXTURE_DATA / "tinyshakespeare" / "input.txt").read_text()
    text = shakespeare + "  naïve café 東京 🙂\n\n\n  tabs\tand   spaces  \n 1234567 it's we'll"
    reference = openai_bpe_encoder()
    assert local_gpt2.encode(text) == reference(text)
    assert local_gpt2.decode(local_gpt2.encode(text)) == text


@pytest.mark.parametrize("differs", ["encoder.json", "vocab.bpe"])
def test_gpt2_files_that_differ_from_openai_are_refused(tmp_path, monkeypatch, differs):
    """Either file alone differing is refused: the other one passes as OpenAI's, its checksum given to
    the tokenizer in place of OpenAI's."""
    folder = tmp_path / "gpt2_bpe"
    folder.mkdir()
    (folder / "encoder.json").write_text('{"!": 0, "t": 1}')
    (folder / "vocab.bpe").write_text("#version: 0.2\nĠ t\n")
    same = "vocab.bpe" if differs == "encoder.json" else "encoder.json"
    checksum = {"encoder.json": "ENCODER_JSON_SHA256", "vocab.bpe": "VOCAB_BPE_SHA256"}[same]
    monkeypatch.setattr(common.tokenizer, checksum, sha256(folder / same))
    monkeypatch.setenv("GPT_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match="differs from OpenAI's GPT-2 files"):
        gpt2_tokenizer.__wrapped__()


def test_gpt2_without_local_files_or_network(tmp_path, monkeypatch):
    def offline(name):
        raise ConnectionError("offline")
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    monkeypatch.setattr(sources, "SHARED_DATA", tmp_path / "nothing")
    monkeypatch.delenv("GPT_DATA_DIR", raising=False)
    with pytest.raises(UserError, match="could not download them") as e:
        gpt2_tokenizer.__wrapped__()
    assert "\n" not in str(e.value)
