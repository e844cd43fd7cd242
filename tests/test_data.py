"""The data/*/prepare.py scripts and sources.py, run offline on the reference copies in ../shared/data:
exact split sizes, lossless round trips, reproducible seeded splits, and one-line errors that say
what to do (and, for a malformed row, where it is)."""

import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest

import data.conll2003.prepare as conll2003
import data.shakespeare.prepare as shakespeare
import data.shakespeare_char.prepare as shakespeare_char
import data.sms_spam.prepare as sms_spam
import data.sms_spam_lm.prepare as sms_spam_lm
import data.sst2.prepare as sst2
import data.sst2_lm.prepare as sst2_lm
from common import sources
from common.cli import UserError
from data import lm_corpus
from common.tokenizer import gpt2_tokenizer, load_tokenizer

REPO = Path(__file__).resolve().parent.parent
CORPUS = sources.SHARED_DATA / "tinyshakespeare" / "input.txt"


def decoded_splits(out_dir):
    tok = load_tokenizer(sources.read_json(out_dir / "meta.json"))
    return [tok.decode(sources.read_tokens(out_dir / f"{split}.bin").tolist()) for split in ("train", "val")]


def read_parts(out_dir, names):
    return {name: sources.read_jsonl(out_dir / f"{name}.jsonl") for name in names}


def pairs(rows):
    return sorted((row["label"], row["text"]) for row in rows)


# --- Tiny Shakespeare, characters and BPE ---

def test_char_prepare_vocab_split_and_round_trip(tmp_path):
    shakespeare_char.prepare(out_dir=tmp_path)
    meta = sources.read_json(tmp_path / "meta.json")
    assert meta["kind"] == "char" and len(meta["chars"]) == 65
    train_ids = sources.read_tokens(tmp_path / "train.bin")
    assert (len(train_ids), len(sources.read_tokens(tmp_path / "val.bin"))) == (1_003_854, 111_540)
    assert train_ids.max() == 64
    train, val = decoded_splits(tmp_path)
    assert train + val == CORPUS.read_text()


def test_bpe_prepare_round_trip(tmp_path):
    text = CORPUS.read_text()[:20_000]
    (tmp_path / "slice.txt").write_text(text)
    shakespeare.prepare(input_path=tmp_path / "slice.txt", out_dir=tmp_path)
    assert sources.read_json(tmp_path / "meta.json") == {"kind": "gpt2"}
    train, val = decoded_splits(tmp_path)
    assert (train, val) == (text[:18_000], text[18_000:])
    assert sources.read_tokens(tmp_path / "train.bin").tolist() == gpt2_tokenizer().encode(train)


@pytest.mark.parametrize("chunk_chars", [1, 7, 300])
def test_bpe_chunked_encoding_equals_whole(chunk_chars):
    """Cut badly, "\\n\\n" at a chunk's end would become one token instead of two."""
    text = CORPUS.read_text()[:5_000] + "end\n\nword \n next\n\n\n  x\ny\n"
    tok = gpt2_tokenizer()
    assert shakespeare.encode_with_progress(tok, text, "test", chunk_chars) == tok.encode(text)


def test_gpt_data_dir_is_searched_first(tmp_path, monkeypatch):
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("to be or not to be\n")
    monkeypatch.setenv("GPT_DATA_DIR", str(tmp_path))
    shakespeare_char.prepare(out_dir=tmp_path / "out")
    assert sources.read_json(tmp_path / "out" / "meta.json")["chars"] == "\n benort"


def test_empty_corpus_is_a_user_error(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="empty"):
        shakespeare_char.prepare(input_path=tmp_path / "empty.txt", out_dir=tmp_path)


# --- finding sources ---

@pytest.mark.parametrize("prepare", [shakespeare_char.prepare, sms_spam.prepare, conll2003.prepare])
def test_missing_source_offline_names_both_remedies(prepare, tmp_path, no_local_data):
    with pytest.raises(UserError) as e:
        prepare(out_dir=tmp_path / "out")
    message = str(e.value)
    assert "--input=PATH" in message and "GPT_DATA_DIR" in message and "\n" not in message
    assert not list((tmp_path / "out").rglob("*.part"))  # no half-downloaded file left behind


def test_missing_input_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        sms_spam.prepare(input_path=tmp_path / "missing.txt", out_dir=tmp_path)


def test_script_prints_user_error_as_one_line(tmp_path):
    """Also proves the script finds the repo's modules when run by path."""
    script = REPO / "data" / "shakespeare_char" / "prepare.py"
    result = subprocess.run([sys.executable, script, f"--input={tmp_path}/nope.txt"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"error: --input={tmp_path}/nope.txt: no such file\n"


def test_download_takes_the_file_out_of_the_zip(tmp_path, monkeypatch, no_local_data):
    rows = [f"ham\thello {i}" for i in range(14)] + [f"spam\tWIN {i}" for i in range(6)]
    with zipfile.ZipFile(tmp_path / "sms.zip", "w") as z:
        z.writestr("readme", "not this one")
        z.writestr("SMSSpamCollection", "\n".join(rows) + "\n")
    monkeypatch.setattr(sms_spam, "URL", (tmp_path / "sms.zip").as_uri())
    sms_spam.prepare(out_dir=tmp_path / "out")
    parts = read_parts(tmp_path / "out", ["train", "val", "test"])
    assert pairs(r for rows in parts.values() for r in rows) == sorted(tuple(r.split("\t")) for r in rows)
    assert (tmp_path / "out" / "downloads" / "SMSSpamCollection").is_file()


# --- finetuning tasks ---

def test_sms_split_is_stratified_complete_and_reproducible(tmp_path):
    sms_spam.prepare(out_dir=tmp_path / "a")
    sms_spam.prepare(out_dir=tmp_path / "b")
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "split.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    parts = read_parts(tmp_path / "a", ["train", "val", "test"])
    everything = sms_spam.read_examples(sources.SHARED_DATA / "sms_spam" / "SMSSpamCollection")
    assert len(everything) == 5574
    assert pairs(everything) == pairs(r for rows in parts.values() for r in rows)  # nothing lost or doubled
    spam_share = 747 / 5574
    for name, fraction in sms_spam.FRACTIONS.items():
        labels = Counter(r["label"] for r in parts[name])
        assert abs(len(parts[name]) - fraction * 5574) <= 1, name
        assert abs(labels["spam"] - spam_share * len(parts[name])) <= 1, (name, labels)
    split = sources.read_json(tmp_path / "a" / "split.json")
    assert split["seed"] == sms_spam.SEED
    assert split["counts"] == {name: dict(Counter(r["label"] for r in rows)) for name, rows in parts.items()}


@pytest.mark.parametrize("task,lm", [(sms_spam, sms_spam_lm), (sst2, sst2_lm)])
def test_lm_corpus_holds_the_train_texts_only(tmp_path, task, lm):
    """Pretraining on a task's texts must not see a val, dev or test text: the corpus is exactly the
    train split's texts, each ended by <|endoftext|>, its last 10% of texts the LM's val."""
    task.prepare(out_dir=tmp_path / "task")
    lm.prepare(input_path=tmp_path / "task" / "train.jsonl", out_dir=tmp_path / "lm")
    texts = [row["text"] for row in sources.read_jsonl(tmp_path / "task" / "train.jsonl")]
    n = int(len(texts) * lm_corpus.TRAIN_FRACTION)
    eot = "<|endoftext|>"
    assert decoded_splits(tmp_path / "lm") == ["".join(t + eot for t in texts[:n]), "".join(t + eot for t in texts[n:])]
    tok = gpt2_tokenizer()
    assert sources.read_tokens(tmp_path / "lm" / "val.bin").tolist() == lm_corpus.encode_documents(tok, texts[n:])
    assert sources.read_tokens(tmp_path / "lm" / "val.bin")[-1] == tok.eot_token


def test_sst2_val_holds_whole_sentences_and_train_drops_their_phrases():
    texts = ["a good film", "a fine cast", "a", "good film", "good", "fine cast", "fine"]  # 2 sentences
    examples = [{"text": t, "label": "positive"} for t in texts]
    parts, n_sentences = sst2.split_by_sentence(examples, {"train": 0.5, "val": 0.5}, seed=0)
    assert n_sentences == 2 and len(parts["val"]) == 1
    # train keeps the other sentence and its phrases, "a" (in both) included; the held-out one's go
    expected = {"a good film": ["a fine cast", "a", "fine cast", "fine"],
                "a fine cast": ["a good film", "a", "good film", "good"]}[parts["val"][0]["text"]]
    assert sorted(r["text"] for r in parts["train"]) == sorted(expected)


def test_sst2_parsing_and_held_out_val(tmp_path):
    train = sst2.read_examples(sources.SHARED_DATA / "sst2" / "train.tsv")
    assert len(train) == 67_349
    assert train[0] == {"text": "hide new secretions from the parental units", "label": "negative"}
    sst2.prepare(out_dir=tmp_path)
    parts = read_parts(tmp_path, ["train", "val", "dev"])
    assert len(parts["dev"]) == 872
    split = sources.read_json(tmp_path / "split.json")
    assert len(parts["train"]) + split["phrases dropped with val's sentences"] == 67_349
    assert abs(len(parts["val"]) - 0.1 * split["sentences in train.tsv"]) <= 1
    assert {r["label"] for rows in parts.values() for r in rows} == set(sst2.LABELS)
    # no val sentence was seen in training, not even inside a longer training row
    seen = set().union(*(sst2.word_spans(r["text"]) for r in parts["train"]))
    assert not any(" ".join(r["text"].split()) in seen for r in parts["val"])


def test_conll_parsing_and_held_out_val(tmp_path):
    sentences = conll2003.read_examples(sources.SHARED_DATA / "conll2003" / "train.txt")
    assert len(sentences) == 14_041
    assert sum(len(s["tokens"]) for s in sentences) == 203_621
    assert sentences[0]["tokens"][:3] == ["EU", "rejects", "German"]
    assert sentences[0]["tags"][:3] == ["B-ORG", "O", "B-MISC"]
    conll2003.prepare(out_dir=tmp_path)
    parts = read_parts(tmp_path, ["train", "val"])
    assert len(parts["val"]) == round(0.1 * 14_041) and len(parts["train"]) + len(parts["val"]) == 14_041


def test_conll_docstart_extra_columns_and_no_final_blank_line(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
                    "-DOCSTART- -X- -X- O\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER")
    assert conll2003.read_examples(path) == [
        {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
        {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]},
    ]


@pytest.mark.parametrize("task, content, line, message", [
    (sms_spam, "ham\tok\nspam no tab here\n", 2, "expected label<TAB>text"),
    (sms_spam, "ham\tok\nhma\thi\n", 2, "unknown label 'hma'"),
    (sms_spam, "ham\tok\n\nspam\t  \n", 3, "empty text"),
    (sst2, "text\tlabel\ngood\t1\n", 1, "expected the header"),
    (sst2, "sentence\tlabel\ngood\t1\nbad\t2\n", 3, "unknown label '2'"),
    (sst2, "sentence\tlabel\na\tb\t1\n", 2, "expected sentence<TAB>label, found 3 column(s)"),
    (sst2, "sentence\tlabel\n\t0\n", 2, "empty text"),
    (conll2003, "EU B-ORG\nrejects\n", 2, "expected 'token TAG'"),
    (conll2003, "EU B-ORG\n\nGerman B-NAT\n", 3, "unknown tag 'B-NAT'"),
])
def test_malformed_rows_name_file_and_line(task, content, line, message, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(UserError) as e:
        task.read_examples(path)
    assert str(e.value).startswith(f"{path}:{line}: {message}")


@pytest.mark.parametrize("task, content", [(sms_spam, "\n"), (sst2, "sentence\tlabel\n"), (conll2003, "\n\n")])
def test_files_without_examples_are_refused(task, content, tmp_path):
    (tmp_path / "none.txt").write_text(content)
    with pytest.raises(UserError, match="no (examples|sentences)"):
        task.read_examples(tmp_path / "none.txt")
