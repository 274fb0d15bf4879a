"""`ember.optim`: PyTorch's optimizers (SGD, Adam, AdamW) and, in `ember.optim.lr_scheduler`,
its learning-rate schedulers. Each optimizer runs eagerly on numpy (`step()`) and exposes the
split a compiled train step uses: host scalars per step (`begin_step`) and a pure, traceable
per-parameter `update`; see `ember.optim.optimizer`."""

from ember.optim import lr_scheduler
from ember.optim.adam import Adam, AdamW
from ember.optim.optimizer import Optimizer
from ember.optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "lr_scheduler"]
