"""Training: the one epoch loop (registered here as the loop models fit with), the
train -> evaluate -> save pipeline, incremental updates and transfer."""

from evorec.models.base import use_training_loop
from evorec.training.loop import train_epochs

use_training_loop(train_epochs)
