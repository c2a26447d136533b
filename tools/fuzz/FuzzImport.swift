// libFuzzer entry point for the ONNX import path (built by tools/fuzz/run.sh).
//
// Every input goes through `ModelFile.decode` exactly as the CLI would see it, minus external
// data (directory nil). Decode errors are the expected outcome for most inputs and are ignored;
// what counts as a finding is anything that does not come back as a thrown `ONNXError`:
// a sanitizer report, a Swift runtime trap, a timeout, an out-of-memory, or a model that decodes
// but whose re-encoding (`ModelFile.encode`) no longer decodes.
//
// Set DISTILL_FUZZ_STRICT=1 to also require that encoding is a fixed point after one round trip
// (encode(decode(encode(m))) == encode(m)); off by default, as byte stability is not a promise
// of the import path.

import DistillCore
import DistillONNX
import Foundation

private let strict = ProcessInfo.processInfo.environment["DISTILL_FUZZ_STRICT"] == "1"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImport(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  let bytes = size > 0 && data != nil ? Array(UnsafeBufferPointer(start: data, count: size)) : []
  let model: Model
  do {
    model = try ModelFile.decode(bytes, file: "<fuzz>", directory: nil, options: ImportOptions())
  } catch {
    return 0  // rejected with an error: the import path did its job
  }

  let encoded = ModelFile.encode(model)
  let again: Model
  do {
    again = try ModelFile.decode(encoded, file: "<fuzz:reencoded>", directory: nil, options: ImportOptions())
  } catch {
    fatalError(
      "round trip failed: a model that decoded (\(size) input bytes) was re-encoded to \(encoded.count) bytes "
        + "that no longer decode: \(error)")
  }

  if strict {
    let reencoded = ModelFile.encode(again)
    if reencoded != encoded {
      let first = zip(encoded, reencoded).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        ?? min(encoded.count, reencoded.count)
      fatalError(
        "round trip not stable: encode(decode(encode(m))) has \(reencoded.count) bytes, encode(m) has "
          + "\(encoded.count); first difference at byte \(first)")
    }
  }
  return 0
}
