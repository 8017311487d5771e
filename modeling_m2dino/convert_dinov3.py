"""`m2dino-convert`: upcycles a local DINOv3 ViT checkpoint into an M2DINO model folder (see `upcycling.py`)."""

import argparse
import json

from .image_processing_m2dino import M2DinoImageProcessor
from .modeling_m2dino import M2DinoForMultiTask


def main(argv=None):
    parser = argparse.ArgumentParser(description="Upcycle a local DINOv3 ViT checkpoint into an M2DINO model folder.")
    parser.add_argument("dinov3_dir", help="DINOv3 folder in transformers format (config.json + model.safetensors)")
    parser.add_argument("output_dir")
    parser.add_argument("--tasks", help="JSON file with a list of task entries (default: the 27 FMC_UIA tasks)")
    parser.add_argument("--num_experts", type=int)
    parser.add_argument("--top_k", type=int, dest="num_experts_per_tok")
    parser.add_argument("--router_mode", choices=["task", "token"])
    parser.add_argument("--image_size", type=int)
    args = parser.parse_args(argv)

    overrides = {k: v for k, v in vars(args).items() if k not in ("dinov3_dir", "output_dir", "tasks") and v is not None}
    if args.tasks:
        with open(args.tasks, encoding="utf-8") as f:
            overrides["tasks"] = json.load(f)
    model = M2DinoForMultiTask.from_dinov3(args.dinov3_dir, **overrides)
    model.save_pretrained(args.output_dir)
    M2DinoImageProcessor.from_config(model.config).save_pretrained(args.output_dir)
    print(f"upcycled {args.dinov3_dir} -> {args.output_dir} (MoE layers {model.config.moe_layers}, "
          f"{model.config.num_experts} experts, {len(model.config.tasks)} tasks)")


if __name__ == "__main__":
    main()
