# Finetune on SST-2 sentiment (GLUE): val is 2% held out of train, dev is the score that counts.
# python data/sst2/prepare.py
# python finetune.py config/finetune_sst2.py --init_from=path/to/gpt2   # a GPT-2 Hugging Face folder
# A small train.py model reaches well below GPT-2's dev accuracy: sentiment needs broad English.

init_from = "out-shakespeare"
task = "sst2"
out_dir = "out-sst2"

head = "last"
train = "full"

lr = 5e-5  # GPT-2-sized models forget their pretraining with larger steps
batch_size = 32
epochs = 2
warmup_iters = 200
max_len = 96  # SST-2 sentences are short
eval_interval = 500  # 67k examples: score val a few times an epoch
log_interval = 50
