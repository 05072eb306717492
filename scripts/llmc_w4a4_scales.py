"""llm-compressor's W4A4 input scales, for docs/w4a4.md's side-by-side comparison. Runs in its own
venv (llm-compressor pins other versions than this project):

    python3.11 -m venv /tmp/llmc && /tmp/llmc/bin/pip install torch==2.13.0 && /tmp/llmc/bin/pip install llmcompressor
    /tmp/llmc/bin/python scripts/llmc_w4a4_scales.py MODEL_DIR SAMPLES.json SEQ_LEN OUT.json

SAMPLES.json is a JSON list of texts; each is tokenized alone, as `nvfp4 quantize --scheme w4a4`
does. OUT.json gets {module: input_global_scale} after oneshot with the NVFP4 preset (fp32 model).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier


def main() -> None:
    model_dir, samples_file, seq_len, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with open(samples_file, encoding="utf-8") as handle:
        samples = json.load(handle)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = [dict(tokenizer(text, truncation=True, max_length=seq_len)) for text in samples]
    recipe = QuantizationModifier(targets="Linear", scheme="NVFP4", ignore=[])
    oneshot(model=model, dataset=Dataset.from_list(rows), recipe=recipe, max_seq_length=seq_len, num_calibration_samples=len(rows))
    scales = {name: float(module.input_global_scale.item()) for name, module in model.named_modules() if hasattr(module, "input_global_scale")}
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(scales, handle, indent=1)


if __name__ == "__main__":
    main()
