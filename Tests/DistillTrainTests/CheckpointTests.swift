import DistillCore
import Foundation
import XCTest

@testable import DistillTrain

final class CheckpointTests: XCTestCase {
  var directory: URL!
  var path: String { directory.appendingPathComponent("ckpt").path }

  override func setUpWithError() throws { directory = try temporaryDirectory() }
  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

  func sample(step: Int = 3, w: [Float] = [1, -2.5, .leastNonzeroMagnitude]) -> Checkpoint {
    Checkpoint(
      step: step, configHash: "0123456789abcdef", rngState: [0xFFFF_FFFF_FFFF_FFFF], consecutiveNonFinite: 1,
      student: [NamedTensor("w", Tensor(shape: [1, 3], floats: w)), NamedTensor("half", Tensor(shape: [2], floats: [0.5, 2], dtype: .float16)),
                NamedTensor("empty", Tensor(shape: [0, 4], floats: []))],
      adapters: [NamedTensor("adapter/0/weight", Tensor(shape: [2, 2], floats: [1, 2, 3, 4]))],
      optimizer: OptimizerState(kind: "adamw", step: 3, tensors: [NamedTensor("exp_avg/w", Tensor(shape: [1, 3], floats: [-0.0, 1e-30, 7]))]),
      metadata: ["model": "toy.onnx"])
  }

  func assertSame(_ a: Checkpoint, _ b: Checkpoint, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.step, b.step, file: file, line: line)
    XCTAssertEqual(a.configHash, b.configHash, file: file, line: line)
    XCTAssertEqual(a.rngState, b.rngState, file: file, line: line)
    XCTAssertEqual(a.consecutiveNonFinite, b.consecutiveNonFinite, file: file, line: line)
    XCTAssertEqual(a.metadata, b.metadata, file: file, line: line)
    XCTAssertEqual(a.optimizer.kind, b.optimizer.kind, file: file, line: line)
    XCTAssertEqual(a.optimizer.step, b.optimizer.step, file: file, line: line)
    for (x, y) in [(a.student, b.student), (a.adapters, b.adapters), (a.optimizer.tensors, b.optimizer.tensors)] {
      XCTAssertEqual(x.map(\.name), y.map(\.name), file: file, line: line)
      for (p, q) in zip(x, y) {
        XCTAssertEqual(p.tensor.shape, q.tensor.shape, p.name, file: file, line: line)
        XCTAssertEqual(p.tensor.dtype, q.tensor.dtype, p.name, file: file, line: line)
        XCTAssertEqual(bits(p.tensor.floats), bits(q.tensor.floats), p.name, file: file, line: line)
      }
    }
  }

  func testRoundTrip() throws {
    try sample().write(to: path)
    assertSame(try Checkpoint.read(path), sample())
    XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".tmp"))
    XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".prev"))
    let bytes = sample().encoded()
    XCTAssertEqual(Array(bytes[0..<8]), Array("DSTLCKPT".utf8))
    XCTAssertEqual(bytes, sample().encoded(), "encoding is deterministic")
  }

  func testTrainerCheckpointRoundTrip() throws {
    let trainer = try Trainer(model: toyModel(), config: toyConfig(), loss: MeanSquaredError(output: "y"), batches: toyBatches())
    trainer.adapters = [NamedTensor("adapter/proj", Tensor(shape: [3, 3], floats: (0..<9).map(Float.init)))]
    try trainer.run(until: 3)
    try trainer.saveCheckpoint(to: path)
    let read = try Checkpoint.read(path)
    assertSame(read, trainer.checkpoint())
    XCTAssertEqual(read.student.map(\.name), ["w", "b", "s"])
    XCTAssertEqual(read.optimizer.tensors.map(\.name), ["exp_avg/b", "exp_avg/s", "exp_avg/w", "exp_avg_sq/b", "exp_avg_sq/s", "exp_avg_sq/w"])
    XCTAssertEqual(read.rngState, [trainer.random.state])
    XCTAssertEqual(read.configHash, toyConfig().hash)
  }

  func error(reading bytes: [UInt8]) -> String {
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    do {
      _ = try Checkpoint.read(path)
      return "no error"
    } catch {
      return "\(error)"
    }
  }

  func testTruncatedAndCorruptFiles() {
    let bytes = sample().encoded()
    XCTAssertEqual(error(reading: []), "\(path): the file is empty (a checkpoint write was cut short?)")
    XCTAssertEqual(error(reading: Array("PK\u{3}\u{4}whatever".utf8)), "\(path): not a distill checkpoint (the file does not start with DSTLCKPT)")
    XCTAssertEqual(error(reading: Array(bytes.prefix(20))), "\(path): truncated: 20 bytes, shorter than the 32-byte prefix")
    for length in [40, bytes.count / 2, bytes.count - 1] {
      XCTAssertEqual(
        error(reading: Array(bytes.prefix(length))),
        "\(path): truncated: \(length) bytes, the checkpoint's prefix announces \(bytes.count)")
    }
    XCTAssertTrue(error(reading: bytes + [0]).contains("corrupt: 1 bytes after the end"))
    for offset in [40, bytes.count - 5] {
      var flipped = bytes
      flipped[offset] ^= 0x10
      XCTAssertTrue(error(reading: flipped).contains("corrupt: checksum"), error(reading: flipped))
    }
    var version = bytes
    version[8] = 9
    XCTAssertEqual(error(reading: version), "\(path): format version 9; this build reads version 1")
    XCTAssertThrowsError(try Checkpoint.read(path + ".missing")) { XCTAssertEqual("\($0)", "\(path).missing: no such file") }
  }

  func testHeaderLyingAboutOffsetsIsCorrupt() {
    // A header that points past the payload, with a valid checksum: the writer's bug, not the disk's.
    var header = sample().encoded()
    let headerLength = Int(header[12]) | Int(header[13]) << 8
    var json = String(decoding: header[32..<(32 + headerLength)], as: UTF8.self)
    json = json.replacingOccurrences(of: "\"offset\":0", with: "\"offset\":9999")
    let payload = Array(header[(32 + headerLength)...])
    var hash = FNV1a64()
    hash.add(Array(json.utf8))
    hash.add(payload)
    header = Array(header[0..<12])
    Checkpoint.append(UInt32(json.utf8.count), to: &header)
    Checkpoint.append(UInt64(payload.count), to: &header)
    Checkpoint.append(hash.value, to: &header)
    XCTAssertTrue(error(reading: header + Array(json.utf8) + payload).contains("lies outside the payload"))
  }

  func testNonFiniteWeightsAreRefused() throws {
    try sample().write(to: path)
    let good = try Data(contentsOf: URL(fileURLWithPath: path))
    XCTAssertThrowsError(try sample(step: 4, w: [1, .nan, 3]).write(to: path)) { error in
      XCTAssertTrue("\(error)".contains("refusing to write a checkpoint: tensor 'w' holds nan at element 1"), "\(error)")
    }
    XCTAssertThrowsError(try sample(step: 4, w: [1, 2, -.infinity]).write(to: path))
    XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), good, "the previous checkpoint is untouched")
  }

  func testPreviousCheckpointSurvivesAFailedWrite() throws {
    try sample(step: 1).write(to: path)
    // The new file is damaged between writing and verifying (a bad disk, a full file system).
    XCTAssertThrowsError(
      try sample(step: 2).write(to: path) { temporary in
        let handle = FileHandle(forWritingAtPath: temporary)!
        handle.truncateFile(atOffset: 100)
        handle.closeFile()
      }
    ) { XCTAssertTrue("\($0)".contains("re-reading"), "\($0)") }
    XCTAssertEqual(try Checkpoint.read(path).step, 1)
    XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".tmp"), "the temporary file is removed")
    // The write fails outright (here: the temporary name is taken by a directory).
    try FileManager.default.createDirectory(atPath: path + ".tmp", withIntermediateDirectories: false)
    XCTAssertThrowsError(try sample(step: 3).write(to: path)) { XCTAssertTrue("\($0)".contains("cannot write"), "\($0)") }
    XCTAssertEqual(try Checkpoint.read(path).step, 1)
    try FileManager.default.removeItem(atPath: path + ".tmp")
    try sample(step: 4).write(to: path)
    XCTAssertEqual(try Checkpoint.read(path).step, 4)
  }

  func testKeepPreviousAndFallBackToIt() throws {
    try sample(step: 1).write(to: path)
    try sample(step: 2).write(to: path, keepPrevious: true)
    XCTAssertEqual(try Checkpoint.read(path).step, 2)
    XCTAssertEqual(try Checkpoint.read(path + ".prev").step, 1)
    // A crash between the two renames leaves only NAME.prev; a damaged NAME falls back to it too.
    try FileManager.default.removeItem(atPath: path)
    var latest = try Checkpoint.readLatest(path)
    XCTAssertEqual(latest.checkpoint.step, 1)
    XCTAssertEqual(latest.file, path + ".prev")
    XCTAssertNotNil(latest.warning)
    _ = FileManager.default.createFile(atPath: path, contents: Data([1, 2, 3]))
    latest = try Checkpoint.readLatest(path)
    XCTAssertEqual(latest.checkpoint.step, 1)
    XCTAssertTrue(latest.warning!.contains("not a distill checkpoint"), latest.warning!)
  }
}
