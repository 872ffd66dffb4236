"""Overrides for runs that train in seconds on a CPU."""

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
