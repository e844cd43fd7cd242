# SMS spam from the shared base model (config/train_imdb_base.py): three finetuned models predict together.
# python data/sms_spam/prepare.py && python finetune.py config/finetune_sms_spam.py

init_from = "out-imdb-base"
task = "sms_spam"
out_dir = "out-sms-spam"

head = "attn_pool"  # spam is told by words anywhere in the message: a learned weighting of the tokens
train = "full"
dropout = 0.1  # 3,902 messages are few for 5M weights
members = 3  # three seeds predict together: a single model errs on 10-16 of the 1,114 test messages

learning_rate = 3e-4
batch_size = 16
epochs = 4  # val peaks by the second epoch; best.pt keeps the best
warmup_iters = 50
max_len = 128  # longer than all but a handful of messages
