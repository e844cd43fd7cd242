# Finetune the shared base model on the IMDb reviews: val is a seeded 10% of the official train, the
# official 25,000-review test split is the score that counts; metrics.json sets it beside the
# bag-of-words baseline fitted on the same reviews.
# python data/imdb/prepare.py
# python train.py config/train_imdb_base.py --out_dir=out-imdb-base   # the base model, 84 min on 2 CPU cores
# python finetune.py config/finetune_imdb.py     # test 87.11% (val 88.52%; bag-of-words 90.82%), 631 s here
# python finetune.py --out_dir=out-imdb --eval_file=data/imdb/test.jsonl --truncate=chunks   # 87.94% (val 89.16%)
# Settings chosen on val (--test=False), never on test. Of --truncate, tail scored 87.96% on val
# (head_tail 88.52%); training on every window (chunks) 88.92% at 1.9 times the cost; training on
# head_tail and scoring every window 89.16%: so the run trains on head_tail, and scoring reads the
# whole review (the second line). Two epochs scored 87.40% on val, lr 1e-3 86.36%: one epoch at 5e-4
# stays. Of the train modes, adapter and lora at --lr=2e-3 come within half a point of this on val
# (see the README).

init_from = "out-imdb-base"
task = "imdb"
out_dir = "out-imdb"

head = "mean"
train = "full"
block_size = 256  # for --init_from=scratch: the base model's context

learning_rate = 5e-4
batch_size = 16
epochs = 1
warmup_iters = 100
max_len = 256  # a review averages ~320 of the base model's tokens: longer ones are cut
truncate = "head_tail"  # a review's opening and its verdict (see finetuning/tasks.py)
eval_interval = 400  # 22,500 training reviews: score val a few times an epoch
log_interval = 50
