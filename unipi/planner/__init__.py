"""The text-conditioned video planner (UniPi, Du et al. 2023), one file per role.

* ``config.py``    TextEncoderConfig, PlannerConfig (+ UNet/Diffusion/Sampling/Train sections)
* ``text.py``      TextEncoder: frozen MiniLM or T5 token features, cached per instruction
* ``unet.py``      SpaceTimeUNet: factorized space-time denoiser of both stages
* ``diffusion.py`` conditioning layout, the weighted loss, the sampling loop
* ``pipeline.py``  UniPiPipeline: observation + instruction -> uint8 video plan
* ``train.py``     train_planner (one stage, resumable, accelerate), export_pipeline
* ``synthetic.py`` MovingSquares clips for tests and sanity checks
* ``testing.py``   tiny T5 and tiny config overrides for tests
"""
