#!/usr/bin/env python3
"""Independent check of a TensorBoard event file written by distill (TensorBoardWriter), read with
TensorBoard's own Python code: its TFRecord reader (checks both masked CRC-32Cs of every record and
raises on a mismatch), its EventFileLoader (what `tensorboard --logdir` uses; migrates simple values
to scalar tensors) and its EventAccumulator (the scalars TensorBoard plots).

usage: check_tensorboard.py EVENT_FILE [--expect JSON]
Prints one JSON object {tag: [[step, value], ...]} of the scalars TensorBoard sees. With --expect
(the same shape), exits 1 unless the tags, steps and float32 values are exactly those.
"""
import argparse
import json
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator, event_file_loader
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.util import tensor_util


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def float32(value):
    return struct.unpack("<f", struct.pack("<f", value))[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path")
    parser.add_argument("--expect", help="JSON object {tag: [[step, value], ...]} the file must hold")
    args = parser.parse_args()

    reader = pywrap_tensorflow.PyRecordReader_New(args.path.encode())
    records = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            break
        except errors.DataLossError as error:
            fail(f"record {len(records)}: {error.message}")
        records.append(reader.record())
    if not records:
        fail(f"{args.path} holds no records")

    first = event_pb2.Event.FromString(records[0])
    if first.file_version != "brain.Event:2":
        fail(f"the first record's file_version is {first.file_version!r}, expected 'brain.Event:2'")

    events = list(event_file_loader.EventFileLoader(args.path).Load())
    if len(events) != len(records):
        fail(f"EventFileLoader read {len(events)} events of {len(records)} records")
    loaded = {}
    for event in events[1:]:
        if event.WhichOneof("what") != "summary":
            fail(f"event at step {event.step} holds {event.WhichOneof('what')}, expected a summary")
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name != scalar_metadata.PLUGIN_NAME:
                fail(f"tag {value.tag!r} at step {event.step} is not migrated to a scalar")
            loaded.setdefault(value.tag, []).append([event.step, float(tensor_util.make_ndarray(value.tensor))])

    accumulator = event_accumulator.EventAccumulator(args.path, size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    scalars = {tag: [[s.step, s.value] for s in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
    if scalars != loaded:
        fail(f"EventAccumulator's scalars {scalars} differ from EventFileLoader's {loaded}")
    print(json.dumps(scalars, sort_keys=True))

    if args.expect is not None:
        expected = {
            tag: [[int(step), float32(value)] for step, value in points] for tag, points in json.loads(args.expect).items()
        }
        if scalars != expected:
            fail(f"scalars {scalars} differ from the expected {expected}")
    print(f"ok: {len(records)} records, {len(scalars)} tags, {sum(map(len, scalars.values()))} points", file=sys.stderr)


if __name__ == "__main__":
    main()
