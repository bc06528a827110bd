"""Print the losses of a few training steps as JSON, on however many devices JAX sees.

``test_train.py`` runs it in fresh processes, with one and with eight simulated CPU
devices. It computes in float64 (parameters, activations, optimizer), so that the
comparison is not blurred by float32 rounding: splitting the batch over devices changes
the order of the batch reductions, and XLA's CPU kernels for a batch of 2 round
differently from those for a batch of 16.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import train  # noqa: E402
from configs import RECIPES  # noqa: E402
from data import load_digits_dataset  # noqa: E402


def losses(arch: str, steps: int = 3, batch_size: int = 16) -> list[float]:
    recipe = RECIPES[arch]
    data = load_digits_dataset(recipe.image_size).with_channels(recipe.input_channels(1))
    images = data.train_images.astype("float64")
    config = train.Config(arch=arch, epochs=1, batch_size=batch_size, warmup_epochs=0).resolved()
    mesh = train.make_mesh()
    model = recipe.build(num_classes=10, channels=data.channels, dtype=jnp.float64, param_dtype=jnp.float64)
    state = train.create_state(model, train.make_optimizer(config, 10), images[:batch_size], 0, mesh)
    step = train.Steps(mesh)
    key = jax.random.key(1)
    out = []
    for rows in train.epoch_order(0, 0, len(images), batch_size)[:steps]:
        state, metrics = step.train(state, *step.shard(images[rows], data.train_labels[rows]), key)
        out.append(float(metrics["loss"]))
    return out


if __name__ == "__main__":
    print(json.dumps({"devices": jax.device_count(), "losses": losses(sys.argv[1])}))
