import torch

# The machine CI runs on has 2 cores; more threads than cores only adds contention.
torch.set_num_threads(2)
