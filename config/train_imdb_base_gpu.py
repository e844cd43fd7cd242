# The shared base model on one GPU (sized for ~10-15 minutes on one H100; UNMEASURED: no GPU was at
# hand). GPT-1's shape (12 layers, 768 wide, 12 heads, 512 tokens of context) on the IMDb reviews of
# data/imdb_lm (22.6M tokens of 8,192-token BPE), so several passes over the corpus: dropout, and
# best.pt keeps the checkpoint with the lowest val loss.
# python train.py config/train_imdb_base_gpu.py
# The estimate: ~0.6 GFLOP a token (6 x 91M parameters + attention) at 250-400 TFLOP/s of bfloat16
# is 400-650k tokens/s, so 8,000 iterations of 32,768 tokens (262M tokens, ~12 passes) take 7-11 minutes
# plus compiling and evaluation. Measure it, then set max_iters for the time you have.

out_dir = "out-imdb-base-gpu"
max_seconds = 1200  # 20 minutes at most: a slower GPU ends on time, its learning rate decayed with the clock
eval_interval = 500
eval_iters = 40
log_interval = 50
always_save_checkpoint = True

dataset = "imdb_lm"
gradient_accumulation_steps = 1
batch_size = 64
block_size = 512

n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.1  # many passes over a small corpus

learning_rate = 6e-4
max_iters = 8000
lr_decay_iters = 8000
min_lr = 6e-5
warmup_iters = 400
beta2 = 0.95

compile = True
