# Finetune the shared base model on the IMDb reviews: val is a seeded 10% of the official train, the
# official 25,000-review test split is the score that counts; metrics.json sets it beside the
# bag-of-words baseline (python finetuning/bow.py --task=imdb: 90.83% test).
# python data/imdb/prepare.py
# python train.py config/train_imdb_base.py                # the base model, ~2 hours on 2 CPU cores
# python finetune.py config/finetune_imdb.py
# UNMEASURED: the base model was not finished when this recipe was written. Choose head, lr,
# max_len and --truncate (head, tail, head_tail) on val, never on test, and record the figures here.

init_from = "out-imdb-base"
task = "imdb"
out_dir = "out-imdb"

head = "mean"
train = "full"
block_size = 256  # for --init_from=scratch: the base model's context

lr = 5e-4
batch_size = 16
epochs = 1
warmup_iters = 100
max_len = 256  # a review averages ~320 of the base model's tokens: longer ones are cut
truncate = "head_tail"  # a review's opening and its verdict (see finetuning/tasks.py)
eval_interval = 400  # 22,500 training reviews: score val a few times an epoch
log_interval = 50
