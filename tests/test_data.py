"""The data/*/prepare.py scripts and sources.py, run offline on the small files in tests/fixtures/data:
exact split sizes, lossless round trips, reproducible seeded splits, and one-line errors that say
what to do (and, for a malformed row, where it is). Where $GPT_DATA_DIR or ../shared/data holds the
real data sets, they are checked against the sizes their README documents; elsewhere those tests skip."""

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
from common.tokenizer import load_tokenizer
from conftest import FIXTURE_DATA, real_data
from data import lm_corpus

REPO = Path(__file__).resolve().parent.parent
CORPUS = FIXTURE_DATA / "tinyshakespeare" / "input.txt"
SMS = FIXTURE_DATA / "sms_spam" / "SMSSpamCollection"


def decoded_splits(out_dir):
    tok = load_tokenizer(sources.read_json(out_dir / "meta.json"))
    return [tok.decode(sources.read_tokens(out_dir / f"{split}.bin").tolist()) for split in ("train", "val")]


def read_parts(out_dir, names):
    return {name: sources.read_jsonl(out_dir / f"{name}.jsonl") for name in names}


def pairs(rows):
    return sorted((row["label"], row["text"]) for row in rows)


# --- Tiny Shakespeare, characters and BPE ---

def test_char_prepare_vocab_split_and_round_trip(tmp_path):
    text = CORPUS.read_text()
    shakespeare_char.prepare(input_path=CORPUS, out_dir=tmp_path)
    meta = sources.read_json(tmp_path / "meta.json")
    assert meta == {"kind": "char", "chars": "".join(sorted(set(text)))}
    n = int(0.9 * len(text))  # the first 90% of the characters are train, the rest val
    assert (len(sources.read_tokens(tmp_path / "train.bin")), len(sources.read_tokens(tmp_path / "val.bin"))) == (
        n, len(text) - n)
    assert decoded_splits(tmp_path) == [text[:n], text[n:]]


def test_bpe_prepare_round_trip(tmp_path, tiny_bpe):
    text = CORPUS.read_text()
    shakespeare.prepare(input_path=CORPUS, out_dir=tmp_path)
    assert sources.read_json(tmp_path / "meta.json") == {"kind": "gpt2"}
    n = int(0.9 * len(text))
    assert decoded_splits(tmp_path) == [text[:n], text[n:]]
    assert sources.read_tokens(tmp_path / "train.bin").tolist() == tiny_bpe.encode(text[:n])


@pytest.mark.parametrize("chunk_chars", [1, 7, 300])
def test_bpe_chunked_encoding_equals_whole(chunk_chars, tiny_bpe):
    """Cut badly, "\\n\\n" at a chunk's end would become one token instead of two."""
    text = CORPUS.read_text() + "end\n\nword \n next\n\n\n  x\ny\n"
    assert len(tiny_bpe.encode("\n\n")) == 1  # the trap exists in this BPE, as in GPT-2's
    assert shakespeare.encode_with_progress(tiny_bpe, text, "test", chunk_chars) == tiny_bpe.encode(text)


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
    sms_spam.prepare(input_path=SMS, out_dir=tmp_path / "a")
    sms_spam.prepare(input_path=SMS, out_dir=tmp_path / "b")
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "split.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    parts = read_parts(tmp_path / "a", ["train", "val", "test"])
    everything = sms_spam.read_examples(SMS)
    assert Counter(r["label"] for r in everything) == {"ham": 30, "spam": 10}
    assert pairs(everything) == pairs(r for rows in parts.values() for r in rows)  # nothing lost or doubled
    for name, fraction in sms_spam.FRACTIONS.items():
        labels = Counter(r["label"] for r in parts[name])
        assert abs(len(parts[name]) - fraction * 40) <= 1, name
        assert abs(labels["spam"] - len(parts[name]) / 4) <= 1, (name, labels)  # a quarter is spam
    split = sources.read_json(tmp_path / "a" / "split.json")
    assert split["seed"] == sms_spam.SEED
    assert split["counts"] == {name: dict(Counter(r["label"] for r in rows)) for name, rows in parts.items()}


@pytest.mark.parametrize("task,lm,raw", [(sms_spam, sms_spam_lm, SMS), (sst2, sst2_lm, FIXTURE_DATA / "sst2")])
def test_lm_corpus_holds_the_train_texts_only(tmp_path, task, lm, raw, tiny_bpe):
    """Pretraining on a task's texts must not see a val, dev or test text: the corpus is exactly the
    train split's texts, each ended by <|endoftext|>, its last 10% of texts the LM's val."""
    task.prepare(input_path=raw, out_dir=tmp_path / "task")
    lm.prepare(input_path=tmp_path / "task" / "train.jsonl", out_dir=tmp_path / "lm")
    texts = [row["text"] for row in sources.read_jsonl(tmp_path / "task" / "train.jsonl")]
    n = int(len(texts) * lm_corpus.TRAIN_FRACTION)
    eot = "<|endoftext|>"
    assert decoded_splits(tmp_path / "lm") == ["".join(t + eot for t in texts[:n]), "".join(t + eot for t in texts[n:])]
    assert sources.read_tokens(tmp_path / "lm" / "val.bin").tolist() == lm_corpus.encode_documents(tiny_bpe, texts[n:])
    assert sources.read_tokens(tmp_path / "lm" / "val.bin")[-1] == tiny_bpe.eot_token


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
    """The fixture holds 12 sentences (6 of each label), each with a few of its phrases as rows."""
    train = sst2.read_examples(FIXTURE_DATA / "sst2" / "train.tsv")
    assert len(train) == 41
    assert train[0] == {"text": "a warm and funny film about growing up", "label": "positive"}
    sst2.prepare(input_path=FIXTURE_DATA / "sst2", out_dir=tmp_path)
    parts = read_parts(tmp_path, ["train", "val", "dev"])
    assert len(parts["dev"]) == 6
    split = sources.read_json(tmp_path / "split.json")
    assert split["sentences in train.tsv"] == 12
    assert Counter(r["label"] for r in parts["val"]) == {"negative": 1, "positive": 1}  # 10% of 6, per label
    # no val sentence was seen in training, not even inside a longer training row
    seen = set().union(*(sst2.word_spans(r["text"]) for r in parts["train"]))
    assert not any(sst2.phrase(r["text"]) in seen for r in parts["val"])
    # and train lost nothing else: a row missing from it is a phrase of a val sentence
    val_spans = set().union(*(sst2.word_spans(r["text"]) for r in parts["val"]))
    dropped = [r for r in train if r not in parts["train"]]
    assert dropped and all(sst2.phrase(r["text"]) in val_spans for r in dropped)
    assert len(parts["train"]) + split["phrases dropped with val's sentences"] == 41


def test_conll_parsing_and_held_out_val(tmp_path):
    path = FIXTURE_DATA / "conll2003" / "train.txt"
    sentences = conll2003.read_examples(path)
    assert len(sentences) == 17  # -DOCSTART- lines start no sentence
    assert sum(len(s["tokens"]) for s in sentences) == 134
    assert sentences[0]["tokens"][:3] == ["Maria", "Lopez", "joined"]
    assert sentences[0]["tags"][:3] == ["B-PER", "I-PER", "O"]
    conll2003.prepare(input_path=path, out_dir=tmp_path)
    parts = read_parts(tmp_path, ["train", "val"])
    assert len(parts["val"]) == round(0.1 * 17)
    assert sorted(map(str, parts["train"] + parts["val"])) == sorted(map(str, sentences))  # nothing lost


# --- the real data sets, where present ---

def test_real_tiny_shakespeare(tmp_path):
    real_data("tinyshakespeare/input.txt")
    shakespeare_char.prepare(out_dir=tmp_path)  # found as a user's run finds it
    assert len(sources.read_json(tmp_path / "meta.json")["chars"]) == 65
    assert (len(sources.read_tokens(tmp_path / "train.bin")), len(sources.read_tokens(tmp_path / "val.bin"))) == (
        1_003_854, 111_540)


def test_real_sms_spam_collection():
    (path,) = real_data("sms_spam/SMSSpamCollection")
    assert Counter(r["label"] for r in sms_spam.read_examples(path)) == {"ham": 4827, "spam": 747}


def test_real_sst2():
    train, dev = real_data("sst2/train.tsv", "sst2/dev.tsv")
    rows = sst2.read_examples(train)
    assert len(rows) == 67_349 and len(sst2.read_examples(dev)) == 872
    assert rows[0] == {"text": "hide new secretions from the parental units", "label": "negative"}


def test_real_conll2003():
    (path,) = real_data("conll2003/train.txt")
    sentences = conll2003.read_examples(path)
    assert len(sentences) == 14_041 and sum(len(s["tokens"]) for s in sentences) == 203_621
    assert sentences[0]["tokens"][:3] == ["EU", "rejects", "German"]
    assert sentences[0]["tags"][:3] == ["B-ORG", "O", "B-MISC"]


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
