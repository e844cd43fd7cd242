# SST-2 (GLUE) from the shared base model (config/train_imdb_base.py), with LoRA. Val is 10% of GLUE's
# training sentences held out whole; GLUE's dev (872 sentences) is the test.
# python data/sst2/prepare.py && python finetune.py config/finetune_sst2.py
# Measured on a 2-core Intel Xeon (Sapphire Rapids), one thread, 2026-12-08 (docs/results.md): 547 s;
# test accuracy 82.22% (val 81.57%) against bag-of-words 81.65% (val 83.45%), 59.52% from random
# initialisation, and 84.75% for the two combined.

init_from = "out-imdb-base"
task = "sst2"
out_dir = "out-sst2"

head = "mean"
train = "lora"  # the body frozen, low-rank updates of every Linear: less to overfit on short sentences

learning_rate = 2e-3  # LoRA's few weights take a larger step than full finetuning's 5e-4
batch_size = 32
epochs = 1
warmup_iters = 100
max_len = 96  # SST-2 sentences are short
eval_interval = 500  # 60,950 training phrases: score val a few times an epoch
log_interval = 100
