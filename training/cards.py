"""Model cards (placeholder until the hub-card issue lands): a README.md that states what the folder holds."""

import json
import os


def write_model_card(model_dir: str) -> str:
    results_file = os.path.join(model_dir, "eval_results.json")
    lines = ["---", "library_name: transformers", "tags: [ultrasound, medical-imaging, mixture-of-experts, multi-task]", "---",
             "# M2DINO", ""]
    if os.path.exists(results_file):
        with open(results_file, encoding="utf-8") as f:
            results = json.load(f)
        lines.append(f"Mean normalised score: {results['score']:.4f}")
    else:
        lines.append("No evaluation results are stored with this model.")
    path = os.path.join(model_dir, "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path
