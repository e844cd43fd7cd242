# The shared base model on the 2-core CPU: one background run of about 2 hours pretrains a small GPT
# on the IMDb reviews (data/imdb_lm: unlabelled + training reviews, no evaluation text, a BPE of 8,192
# tokens learned from them). Every finetuning recipe starts from its best.pt.
#   nohup python train.py config/train_imdb_base.py --out_dir=/work/exp/imdb_base > imdb_base.log 2>&1 &
#   python train.py config/train_imdb_base.py --out_dir=/work/exp/imdb_base --init_from=resume   # after a stop
# Sized by measurement on a quiet 2-core AMD EPYC with native bfloat16: ~12,000 tokens/s, so 10,000
# iterations of 4,096 tokens (41M tokens, ~1.8 passes over the corpus) take about an hour (84 min
# measured, with other jobs beside it part of the time): val loss 4.25 at the end. A CPU without
# bfloat16 runs at about half that speed; the time budget ends the run at 2 hours there, the learning
# rate decayed in step with the time (train.schedule_position).

out_dir = "out-imdb-base"
eval_interval = 500
eval_iters = 20
log_interval = 25

dataset = "imdb_lm"  # data/imdb_lm/prepare.py
batch_size = 16
block_size = 256  # a review averages ~320 tokens: finetuning keeps 256 or reads windows (--truncate)

n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0  # under two passes over 22.6M tokens: nothing to overfit yet

learning_rate = 1e-3
max_iters = 10000
lr_decay_iters = 10000
max_seconds = 7200  # the 2 hours of the issue that asked for this model; off when 0
min_lr = 1e-4
warmup_iters = 200
beta2 = 0.99  # few tokens per iteration: a shorter memory for the second moment
