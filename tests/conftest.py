"""Suite-wide settings: one torch thread per process (tests and Ray workers share two cores, and
small convolutions run many times slower when threads contend)."""
import torch

torch.set_num_threads(1)
