# The shared base model on the 2-core CPU: one background run of about 2 hours pretrains a small GPT
# on the IMDb reviews (data/imdb_lm: unlabelled + training reviews, no evaluation text, a BPE of 8,192
# tokens learned from them). Every finetuning recipe starts from its best.pt.
# nice -n 19 nohup python train.py config/train_imdb_base.py --out_dir=/work/exp/imdb_base > imdb_base.log 2>&1 &
# python train.py config/train_imdb_base.py --out_dir=/work/exp/imdb_base --init_from=resume   # after a stop
# Sized by measurement (shared CPU, load 11-18 from other jobs): one step of this model took 1,000-1,350
# tokens per CPU-second (compiled), so both cores give ~2,000-2,700 tokens/s and 3,500 iterations of 4,096
# tokens (14.3M tokens, ~0.6 of the corpus) take ~1.5-2 hours when the cores are free, longer when shared.

out_dir = "out-imdb-base"
eval_interval = 250
eval_iters = 20
log_interval = 25

dataset = "imdb_lm"  # data/imdb_lm/prepare.py
batch_size = 16
block_size = 256  # a review is ~320 tokens on average: finetuning reads longer ones in pieces

n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0  # less than one pass over the corpus: nothing to overfit yet

learning_rate = 1e-3
max_iters = 3500
lr_decay_iters = 3500
min_lr = 1e-4
warmup_iters = 200
beta2 = 0.99  # few tokens per iteration: a shorter memory for the second moment
