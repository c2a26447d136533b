import Foundation
import XCTest

@testable import DistillTrain

final class TensorBoardWriterTests: XCTestCase {
  var directory: URL!

  override func setUpWithError() throws {
    directory = FileManager.default.temporaryDirectory.appendingPathComponent("tb-\(UUID().uuidString)")
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(at: directory)
  }

  /// Vectors from RFC 3720 (iSCSI), appendix B.4, and the usual check value.
  func testCRC32CKnownVectors() {
    XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
    XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
    XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
    XCTAssertEqual(CRC32C.checksum(Array(UInt8(0)...UInt8(31))), 0x46DD_794E)
    XCTAssertEqual(CRC32C.checksum([UInt8]()), 0)
    XCTAssertEqual(CRC32C.masked(0), 0xA282_EAD8)
    XCTAssertEqual(CRC32C.masked(0x0000_8000), 0xA282_EAD9)
    XCTAssertEqual(CRC32C.masked(0x0000_0001), 0xA284_EAD8)
  }

  /// Writes a few steps and reads them back: the file name TensorBoard globs for, the TFRecord
  /// framing of every record checked byte by byte here, then the events decoded by protobuf-c.
  func testWritesFileVersionThenOneEventPerStep() throws {
    let writer = try TensorBoardWriter(directory: directory.path, runName: "student")
    let steps: [[String: Double]] = [
      ["loss/total": 2.5, "lr": 0.01, "loss/kd": 1.25],
      ["loss/total": 1.75, "lr": 0.02, "loss/kd": 0.5, "grad_norm": 3.0e-7],
      ["mAP": 0.123456789],
    ]
    for (step, scalars) in steps.enumerated() {
      try writer.add(scalars: scalars, step: step * 10, wallTime: 1_700_000_000.5 + Double(step))
    }
    try writer.close()

    let file = URL(fileURLWithPath: writer.path)
    XCTAssertEqual(file.deletingLastPathComponent().standardizedFileURL.path,
                   directory.appendingPathComponent("student").standardizedFileURL.path)
    let name = file.lastPathComponent
    let prefix = "events.out.tfevents."
    XCTAssertTrue(name.hasPrefix(prefix), name)
    let seconds = name.dropFirst(prefix.count).prefix { $0 != "." }
    XCTAssertEqual(abs(Double(String(seconds))! - Date().timeIntervalSince1970), 0, accuracy: 60, name)
    XCTAssertEqual(String(name.dropFirst(prefix.count + seconds.count + 1)), ProcessInfo.processInfo.hostName)

    let bytes = [UInt8](try Data(contentsOf: file))
    var offset = 0
    var payloads: [[UInt8]] = []
    func littleEndian(_ range: Range<Int>) -> UInt64 {
      range.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64(bytes[$1]) }
    }
    while offset < bytes.count {
      let length = Int(littleEndian(offset..<offset + 8))
      XCTAssertLessThanOrEqual(offset + 16 + length, bytes.count)
      XCTAssertEqual(UInt32(littleEndian(offset + 8..<offset + 12)), CRC32C.masked(CRC32C.checksum(bytes[offset..<offset + 8])))
      let data = Array(bytes[offset + 12..<offset + 12 + length])
      XCTAssertEqual(UInt32(littleEndian(offset + 12 + length..<offset + 16 + length)), CRC32C.masked(CRC32C.checksum(data)))
      payloads.append(data)
      offset += 16 + length
    }
    XCTAssertEqual(offset, bytes.count)
    XCTAssertEqual(try TensorBoardEventFile.records(bytes), payloads)
    XCTAssertEqual(payloads.count, 1 + steps.count)

    let events = try TensorBoardEventFile.read(writer.path)
    XCTAssertEqual(events.count, 1 + steps.count)
    XCTAssertEqual(events[0].fileVersion, "brain.Event:2")
    XCTAssertEqual(events[0].step, 0)
    XCTAssertTrue(events[0].scalars.isEmpty)
    for (step, scalars) in steps.enumerated() {
      let event = events[step + 1]
      XCTAssertNil(event.fileVersion)
      XCTAssertEqual(event.step, step * 10)
      XCTAssertEqual(event.wallTime, 1_700_000_000.5 + Double(step))
      XCTAssertEqual(event.scalars.map(\.tag), scalars.keys.sorted())
      XCTAssertEqual(event.scalars.map(\.value), scalars.keys.sorted().map { Float(scalars[$0]!) })
    }
  }

  func testCorruptRecordsNameTheFileAndOffset() throws {
    let writer = try TensorBoardWriter(directory: directory.path)
    try writer.add(scalars: ["loss": 1], step: 1)
    try writer.close()
    var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: writer.path)))
    let second = try TensorBoardEventFile.records(bytes)[0].count + 16

    var flipped = bytes
    flipped[second + 14] ^= 0x01
    XCTAssertThrowsError(try TensorBoardEventFile.records(flipped, path: "x.tfevents")) { error in
      XCTAssertEqual(error as? TensorBoardError, .corruptRecord(path: "x.tfevents", offset: second, problem: "data checksum mismatch"))
    }
    flipped = bytes
    flipped[second] ^= 0x01
    XCTAssertThrowsError(try TensorBoardEventFile.records(flipped, path: "x.tfevents")) { error in
      XCTAssertEqual(error as? TensorBoardError, .corruptRecord(path: "x.tfevents", offset: second, problem: "length checksum mismatch"))
    }
    bytes.removeLast()
    XCTAssertThrowsError(try TensorBoardEventFile.records(bytes, path: "x.tfevents")) { error in
      XCTAssertEqual(error as? TensorBoardError, .corruptRecord(path: "x.tfevents", offset: second, problem: "truncated: \(bytes.count - second - 15) data bytes announced"))
    }
  }

  /// The header reaches the file at once; events reach it every `flushEvery` events, on `flush()`
  /// and on `close()`.
  func testFlushesEveryNEventsAndOnClose() throws {
    let writer = try TensorBoardWriter(directory: directory.path, flushEvery: 3, flushInterval: 3600)
    func eventsOnDisk() throws -> Int { try TensorBoardEventFile.read(writer.path).count }
    XCTAssertEqual(try eventsOnDisk(), 1)
    try writer.add(scalars: ["a": 1], step: 1)
    try writer.add(scalars: ["a": 2], step: 2)
    XCTAssertEqual(try eventsOnDisk(), 1)
    try writer.add(scalars: ["a": 3], step: 3)
    XCTAssertEqual(try eventsOnDisk(), 4)
    try writer.add(scalars: ["a": 4], step: 4)
    try writer.flush()
    XCTAssertEqual(try eventsOnDisk(), 5)
    try writer.add(scalars: ["a": 5], step: 5)
    try writer.close()
    XCTAssertEqual(try eventsOnDisk(), 6)
    try writer.close()
    XCTAssertThrowsError(try writer.add(scalars: ["a": 6], step: 6)) { error in
      XCTAssertEqual(error as? TensorBoardError, .closed(path: writer.path))
    }
  }

  func testFlushesAfterTheInterval() throws {
    let writer = try TensorBoardWriter(directory: directory.path, flushEvery: 1000, flushInterval: 0)
    try writer.add(scalars: ["a": 1], step: 1)
    XCTAssertEqual(try TensorBoardEventFile.read(writer.path).count, 2)
  }

  func testWritersStartedInTheSameSecondGetTheirOwnFiles() throws {
    let writers = try (0..<3).map { _ in try TensorBoardWriter(directory: directory.path) }
    XCTAssertEqual(Set(writers.map(\.path)).count, 3)
    for writer in writers { try writer.close() }
  }

  func testUnwritableDirectoryNamesThePath() throws {
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let file = directory.appendingPathComponent("not-a-directory")
    try Data("x".utf8).write(to: file)
    let runs = file.appendingPathComponent("runs").path
    XCTAssertThrowsError(try TensorBoardWriter(directory: runs)) { error in
      guard case .cannotCreateDirectory(let path, _) = error as? TensorBoardError else { return XCTFail("\(error)") }
      XCTAssertEqual(path, runs)
      XCTAssertTrue("\(error)".hasPrefix(runs + ": cannot create the TensorBoard log directory"), "\(error)")
    }
  }

  /// Reads the file with TensorBoard's own Python reader (tools/check_tensorboard.py). Needs a
  /// Python with the tensorboard package: `DISTILL_TENSORBOARD_PYTHON`, else .build-venv-torch/ or
  /// .build-venv/ when they have it.
  func testTensorBoardReadsTheScalars() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let candidates = [ProcessInfo.processInfo.environment["DISTILL_TENSORBOARD_PYTHON"]].compactMap { $0 }
      + [".build-venv-torch/bin/python", ".build-venv/bin/python"].map { root.appendingPathComponent($0).path }
    guard let python = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) && run($0, ["-c", "import tensorboard"]).status == 0 }) else {
      throw XCTSkip("no Python with the tensorboard package (set DISTILL_TENSORBOARD_PYTHON or install it into .build-venv-torch/); tried \(candidates)")
    }
    let writer = try TensorBoardWriter(directory: directory.path, runName: "run")
    var expected: [String: [[Double]]] = [:]
    for step in 0..<5 {
      let scalars = ["loss/total": 3.0 / Double(step + 1), "lr": 0.001 * Double(step), "grad_norm": 1e-3 + Double(step) * 0.25]
      try writer.add(scalars: scalars, step: step * 100)
      for (tag, value) in scalars { expected[tag, default: []].append([Double(step * 100), value]) }
    }
    try writer.close()
    let expectation = String(decoding: try JSONSerialization.data(withJSONObject: expected), as: UTF8.self)
    let result = run(python, [root.appendingPathComponent("tools/check_tensorboard.py").path, writer.path, "--expect", expectation])
    XCTAssertEqual(result.status, 0, result.output)
  }

  private func run(_ executable: String, _ arguments: [String]) -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    do { try process.run() } catch { return (-1, "\(error)") }
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
  }
}
