"""The IMDb task (data/imdb/prepare.py, its split made in data/imdb_reviews.py): the official files
parsed exactly, a held-out val that is stratified, reproducible and independent of the files' row
order, no training text that is an evaluation text, and the original archive turned into the same
raw layout. The pretraining corpus (data/imdb_lm/prepare.py): no text that the task's prepared files
hold out, not even one that differs by a byte order mark."""

import io
import random
import tarfile
from collections import Counter

import pytest

import data.imdb.prepare as imdb
import data.imdb_lm.prepare as imdb_lm
from common import files, sources
from data import imdb_reviews
from common.cli import UserError
from common.tokenizer import load_tokenizer
from conftest import real_data
from data.formats import read_imdb, read_imdb_unlabelled

IMDB_FILES = ("imdb/train.tsv", "imdb/test.tsv", "imdb/unsup.txt")  # the real data set, 130 MB: not a fixture


def write_tsv(path, rows):
    path.write_text("text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")


def fake_raw_files(folder, train_rows, test_rows, unsup=()):
    folder.mkdir(parents=True, exist_ok=True)
    write_tsv(folder / "train.tsv", train_rows)
    write_tsv(folder / "test.tsv", test_rows)
    (folder / "unsup.txt").write_text("".join(t + "\n" for t in unsup), encoding="utf-8")
    return folder


def texts(rows):
    return {row["text"] for row in rows}


def test_official_files_parse_exactly():
    train_tsv, test_tsv, unsup_txt = real_data(*IMDB_FILES)
    train = read_imdb(train_tsv)
    test = read_imdb(test_tsv)
    assert Counter(e["label"] for e in train) == Counter(e["label"] for e in test) == {"negative": 12_500, "positive": 12_500}
    assert sum(e["text"].startswith('"') for e in train) > 500  # quoted texts survive: no csv quoting
    assert len(texts(train) & texts(test)) == 123  # the original release's overlap, per the README
    assert len(read_imdb_unlabelled(unsup_txt)) == 50_000


def test_prepare_is_stratified_reproducible_and_holds_out_evaluation_texts(tmp_path):
    train_tsv = real_data(*IMDB_FILES)[0]
    imdb.prepare(out_dir=tmp_path / "a")
    imdb.prepare(out_dir=tmp_path / "b")
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "split.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    parts = {name: files.read_jsonl(tmp_path / "a" / f"{name}.jsonl") for name in ("train", "val", "test")}
    assert Counter(e["label"] for e in parts["val"]) == {"negative": 1_250, "positive": 1_250}
    assert len(parts["test"]) == 25_000
    assert not texts(parts["train"]) & (texts(parts["val"]) | texts(parts["test"]))
    official = read_imdb(train_tsv)
    dropped = files.read_json(tmp_path / "a" / "split.json")["train rows dropped as copies of a val or test text"]
    assert len(parts["train"]) + len(parts["val"]) + dropped == len(official)
    assert 0 < dropped < 200  # the 123 test texts and a few repeated train texts, not more
    seen = Counter((e["label"], e["text"]) for e in parts["train"] + parts["val"])
    assert not seen - Counter((e["label"], e["text"]) for e in official)  # nothing invented or relabelled


def test_split_ignores_row_order_and_drops_train_copies_of_held_out_texts(tmp_path):
    rows = [(f"review number {i}", str(i % 2)) for i in range(40)]
    rows += [("seen twice", "1"), ("seen twice", "1"), ("also in test", "0")]
    test_rows = [("also in test", "0"), ("a test review", "1")]
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    a, _ = imdb_reviews.split_reviews(fake_raw_files(tmp_path / "a", rows, test_rows), tmp_path)
    b, _ = imdb_reviews.split_reviews(fake_raw_files(tmp_path / "b", shuffled, test_rows), tmp_path)
    assert a == b
    assert "also in test" not in texts(a["train"])
    assert not texts(a["train"]) & texts(a["val"])
    assert Counter(e["label"] for e in a["val"]) == {"negative": 2, "positive": 2}  # 10% of each label, rounded


def write_archive(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_archive_becomes_the_raw_layout(tmp_path, monkeypatch, no_local_data):
    files = {"aclImdb/README": "not a review",
             "aclImdb/train/pos/10_8.txt": "Ten.<br /><br />Great  film.",
             "aclImdb/train/pos/2_9.txt": "Two:\n\"loved\" it",
             "aclImdb/train/neg/0_1.txt": "Dull\tand long.",
             "aclImdb/test/neg/0_2.txt": "Bad.",
             "aclImdb/test/pos/0_10.txt": "Good.",
             "aclImdb/train/unsup/0_0.txt": "Some<br />words."}
    write_archive(tmp_path / "aclImdb_v1.tar.gz", files)
    monkeypatch.setattr(imdb_reviews, "URL", (tmp_path / "aclImdb_v1.tar.gz").as_uri())
    out = tmp_path / "out"
    train = read_imdb(imdb_reviews.find_raw("train.tsv", None, out))
    assert train == [{"text": "Dull and long.", "label": "negative"},
                     {"text": 'Two: "loved" it', "label": "positive"},  # by id: 2 before 10
                     {"text": "Ten. Great film.", "label": "positive"}]
    assert read_imdb(imdb_reviews.find_raw("test.tsv", None, out)) == [
        {"text": "Bad.", "label": "negative"}, {"text": "Good.", "label": "positive"}]
    assert read_imdb_unlabelled(imdb_reviews.find_raw("unsup.txt", None, out)) == ["Some words."]


def test_missing_raw_files_offline_name_the_remedies(tmp_path, no_local_data):
    with pytest.raises(UserError) as e:
        imdb.prepare(out_dir=tmp_path / "out")
    assert "--input=PATH" in str(e.value) and "GPT_DATA_DIR" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("content, line, message", [
    ("sentence\tlabel\ngood\t1\n", 1, "expected the header"),
    ("text\tlabel\ngood\t1\nno tab here\n", 3, "expected text<TAB>label"),
    ("text\tlabel\ngood\t2\n", 2, "unknown label '2'"),
    ("text\tlabel\n \t0\n", 2, "empty text"),
])
def test_malformed_rows_name_file_and_line(content, line, message, tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(UserError) as e:
        read_imdb(path)
    assert str(e.value).startswith(f"{path}:{line}: {message}")


def test_label_is_after_the_last_tab(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("text\tlabel\na\ttab inside\t1\n")
    assert read_imdb(path) == [{"text": "a\ttab inside", "label": "positive"}]


# --- the pretraining corpus, data/imdb_lm ---

def test_lm_corpus_holds_no_text_the_task_holds_out(tmp_path):
    """Built from a small fake of the raw files whose unsup and train overlap test, as the real ones do,
    and the task prepared from the same files: the corpus is exactly the texts that the task's val.jsonl
    and test.jsonl don't hold, each once, each ended by <|endoftext|>. One unsup review is a test review
    with a byte order mark pasted in front, another a test review that holds one, a third holds one
    inside: none may slip through."""
    train_rows = [(f"Train review {i}: {'great' if i % 2 else 'awful'} acting, {i * 7} stars", str(i % 2))
                  for i in range(60)]
    train_rows += [("A review in both train and test.", "1"), ("Twice in train.", "0"), ("Twice in train.", "0")]
    test_rows = [("A review in both train and test.", "1"), ("Unsup also has this test review.", "0"),
                 ("Only in test.", "1"), ("A test review with\ufeff a BOM.", "0")]
    unsup = ["Unlabelled review one.", "Unsup also has this test review.", "Unlabelled review one.",
             "Train review 3: great acting, 21 stars", "Ünïcödé review 🙂.", "\ufeffOnly in test.",
             "A test review with a BOM.", "A pasted\ufeff review."]
    raw = fake_raw_files(tmp_path / "raw", train_rows, test_rows, unsup)
    imdb.prepare(input_path=raw, out_dir=tmp_path / "task")
    imdb_lm.prepare(input_path=raw, out_dir=tmp_path / "lm")

    tok = load_tokenizer(files.read_json(tmp_path / "lm" / "meta.json"))
    assert tok.meta["kind"] == "bpe"
    streams = [sources.read_tokens(tmp_path / "lm" / f"{split}.bin").tolist() for split in ("train", "val")]
    assert all(ids[-1] == tok.eot_token for ids in streams)
    documents = [doc for ids in streams for doc in tok.decode(ids).split("<|endoftext|>")[:-1]]

    held_out = set().union(*(texts(files.read_jsonl(tmp_path / "task" / f"{name}.jsonl")) for name in ("val", "test")))
    held_out = {t.replace("\ufeff", "") for t in held_out}  # as the corpus compares them
    assert {"Unsup also has this test review.", "Only in test.", "A test review with a BOM."} <= held_out
    assert len(held_out) > 4  # val too
    assert not set(documents) & held_out
    allowed = ({t for t, _ in train_rows} | {t.replace("\ufeff", "") for t in unsup}) - held_out
    assert sorted(documents) == sorted(allowed)  # all the rest, once, without the pasted BOM
    assert files.read_json(tmp_path / "lm" / "split.json")["reviews"] == len(documents)
