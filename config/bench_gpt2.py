# GPT-2 small (124M) training throughput on one GPU: block 1024, bf16, torch.compile, flash attention.
# python tools/bench.py config/bench_gpt2.py
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
vocab_size = 50304  # 50257 padded up to a multiple of 64: faster matmuls on tensor cores
bias = True
batch_size = 16
compile_modes = "eager,compile"
attentions = "sdpa"
dtype = "bfloat16"
warmup_steps = 10  # compilation happens here
steps = 30
