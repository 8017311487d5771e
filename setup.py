from setuptools import setup

# Two import packages, the way open_clip ships open_clip and open_clip_train: the model (what a user
# of the weights needs, copied flat by trust_remote_code) and the training side, installed as
# `m2dino_training` so that no bare top-level `training` module lands in site-packages.
setup(
    name="m2dino",
    version="0.1.0",
    description="M2DINO: multi-task ultrasound foundation models (DINOv3 + task-conditioned MoE) for transformers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=["modeling_m2dino", "m2dino_training", "m2dino_training.data", "m2dino_training.data.synthetic",
              "m2dino_training.task_types", "m2dino_training.hub_cards"],
    package_dir={
        "modeling_m2dino": "modeling_m2dino",
        "m2dino_training": "training",
        "m2dino_training.data": "training/data",
        "m2dino_training.data.synthetic": "training/data/synthetic",
        "m2dino_training.task_types": "training/task_types",
        "m2dino_training.hub_cards": "hub_cards",
    },
    package_data={"m2dino_training.hub_cards": ["*.md"], "m2dino_training": ["metrics_modules/*.py"]},
    install_requires=[
        "torch>=2.6",
        "transformers>=5.23,<6",
        "safetensors>=0.8",
        "scipy",
        "numpy",
        "pillow",
        "datasets",
        "evaluate",  # load_challenge_metric: the challenge metrics as an evaluate module (training/metrics_modules/)
        "accelerate>=1.15",
        "peft>=0.21",
        "huggingface_hub",
        "matplotlib",
        "jinja2",
        # the libraries the challenge's scorer uses, for its figures exactly (tested: 1.9.1 and 2.5.7)
        "scikit-learn>=1.9,<2",
        "SimpleITK>=2.5,<3",
    ],
    extras_require={
        "dicom": ["pydicom>=2.4"],
        "test": ["pytest", "pydicom>=2.4", "parameterized>=0.9"],
    },
    entry_points={
        "console_scripts": [
            "m2dino-convert=m2dino_training.cli:convert",
            "m2dino-synth=m2dino_training.cli:synth",
            "m2dino-train=m2dino_training.cli:train",
            "m2dino-evaluate=m2dino_training.cli:evaluate",
            "m2dino-predict=m2dino_training.cli:predict",
            "m2dino-score=m2dino_training.cli:score",
            "m2dino-experiment=m2dino_training.cli:experiment",
            "m2dino-finetune=m2dino_training.cli:finetune",
            "m2dino-card=m2dino_training.cli:card",
            "m2dino-routing=m2dino_training.cli:routing",
            "m2dino-bench=m2dino_training.cli:bench",
            "m2dino-advise=m2dino_training.cli:advise",
        ]
    },
)
