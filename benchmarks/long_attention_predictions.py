"""The twin's seconds of every call of campaign s24long (real/bench/long_attention.LONG_ATTN_CASES) on the committed
H100 profile's FA2 curves at 700 W, before any record: the predictions docs/notes/s24long_rule.md registers.

    PYTHONPATH=. python benchmarks/long_attention_predictions.py
"""

from calibration import long_attention as la
from calibration.predict import gpu_spec
from real.bench.long_attention import LONG_ATTN_CASES


def main() -> None:
    gpu, profile = gpu_spec("h100"), la.committed_profile("h100")
    fa2 = profile.with_attention_kernel("fa2")
    df = la.case_rows(LONG_ATTN_CASES)
    df["twin_ms"] = [la.row_s(r, gpu, fa2) * 1e3 for _, r in df.iterrows()]
    df["cls"] = [la.call_class(r) for _, r in df.iterrows()]
    print(df[["model", "batch", "num_heads", "q_len", "kv_len", "mask", "phase", "split", "cls", "twin_ms"]].to_string(
        index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
