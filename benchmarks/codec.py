"""TensorProto/base64 codec throughput on 256x256xC float32 tiles, against TensorFlow's own.

Prints, per channel count, the time to encode one tile to the EE wire string and to decode it
back, for `ee_model_widgets.serving.codec` and for TensorFlow:
- `tf.make_tensor_proto(x).SerializeToString()` + base64 (the protobuf route),
- `tf.io.encode_base64(tf.io.serialize_tensor(x))` (the eager op route, what EE-prepared graphs run);
and the ratios TensorFlow / ours measured in the same run (> 1 means ours is faster).
Bytes are checked to be identical before timing.

Run: .venv/bin/python benchmarks/codec.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import base64
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from _figures import record  # noqa: E402
from _timing import best  # noqa: E402

from ee_model_widgets.serving import codec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    import tensorflow as tf

    rng = np.random.default_rng(0)
    print(
        f"{'tile':>14} | {'ours enc':>9} {'proto enc':>9} {'tf op enc':>9} | {'ours dec':>9} {'proto dec':>9} {'tf op dec':>9}"
        " | enc ratio proto/op | dec ratio proto/op"
    )
    for c in (1, 4, 12):
        x = rng.random((256, 256, c), dtype=np.float32)
        ours_text = codec.encode_tensor(x)
        op_text = tf.io.encode_base64(tf.io.serialize_tensor(x)).numpy().decode()
        assert ours_text == op_text, "codec output differs from TensorFlow's"

        def proto_enc(x=x):
            return base64.urlsafe_b64encode(tf.make_tensor_proto(x).SerializeToString()).rstrip(b"=")

        def op_enc(x=x):
            return tf.io.encode_base64(tf.io.serialize_tensor(x)).numpy()

        def proto_dec(t=ours_text):
            from tensorflow.core.framework import tensor_pb2

            p = tensor_pb2.TensorProto()
            p.ParseFromString(base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)))
            return tf.make_ndarray(p)

        def op_dec(t=ours_text):
            return tf.io.parse_tensor(tf.io.decode_base64(t), tf.float32).numpy()

        enc = best(lambda x=x: codec.encode_tensor(x), args.repeat)
        enc_p, enc_o = best(proto_enc, args.repeat), best(op_enc, args.repeat)
        dec = best(lambda t=ours_text: codec.decode_tensor(t), args.repeat)
        dec_p, dec_o = best(proto_dec, args.repeat), best(op_dec, args.repeat)
        ms = lambda s: f"{s * 1e3:8.2f}m"  # noqa: E731
        if c == 4:
            ops_ratio = {"enc": enc_o / enc, "dec": dec_o / dec}
            proto_ratio = {"enc": enc_p / enc, "dec": dec_p / dec}
        print(
            f"{f'256x256x{c}':>14} | {ms(enc)} {ms(enc_p)} {ms(enc_o)} | {ms(dec)} {ms(dec_p)} {ms(dec_o)}"
            f" | {enc_p / enc:6.2f}x {enc_o / enc:6.2f}x      | {dec_p / dec:6.2f}x {dec_o / dec:6.2f}x"
        )
    print("(m = milliseconds per tile, best of", args.repeat, "runs; ratios = TensorFlow time / ours)")
    record(
        "codec.a",
        "A 256x256x4 wire-format tile (TensorProto + web-safe base64), TensorFlow's ops / ours, bytes identical",
        f"decode {ops_ratio['dec']:.1f}x, encode {ops_ratio['enc']:.1f}x faster than `tf.io` ops "
        f"(protobuf route: {proto_ratio['dec']:.1f}x, {proto_ratio['enc']:.1f}x)",
    )


if __name__ == "__main__":
    main()
