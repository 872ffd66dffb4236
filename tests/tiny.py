"""Overrides for runs that train in seconds on a CPU, and the check of a failed start's output."""

# lit_ebm.fit warns, each on a line of its own, about a section it does not use: the tiny runs set
# the RealNVP's, which a PixelCNN or toy run ignores
UNUSED_REALNVP_WARNING = "warning: override 'model.generator.realnvp"

TINY_IMAGE_RUN = [
    "data.name=mnist5k",
    "data.batch_size=16",
    "model.generator.realnvp.num_scales=1",
    "model.generator.realnvp.num_blocks=1",
    "model.generator.realnvp.hidden_channels=8",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "num_sample_images=4",
    "eval.every_n_epochs=0",  # sample quality has its own tests
]

TINY_PIXELCNN_RUN = [
    *TINY_IMAGE_RUN,
    "model.generator.name=pixelcnn",
    "model.generator.pixelcnn.channels=8",
    "model.generator.pixelcnn.dilations=[1,2]",
    "model.generator_optim.lr=0.01",
]


def one_line_error(output: str) -> str:
    """The single ``error:`` line of a failed start's output, beside the unused-section warnings
    of the tiny runs' own overrides; fails when anything else was printed."""
    lines = [line for line in output.splitlines()
             if line.strip() and not line.startswith(UNUSED_REALNVP_WARNING)]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]
