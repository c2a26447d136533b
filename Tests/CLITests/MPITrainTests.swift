import DistillCore
import DistillONNX
import Foundation
import XCTest

/// `mpirun -np N distill train` on this machine (loopback): N processes equal one, a process that
/// dies ends the job, and a stopped job resumes with any number of processes.
final class MPITrainTests: XCTestCase {
  /// Relative tolerance for weights and logged values between a data-parallel run and one process.
  let tolerance = 1e-5

  /// `mpirun` on PATH, or a skip saying how to get it.
  func mpirun() throws -> String {
    let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/mpirun" }
    guard let found = path.first(where: FileManager.default.isExecutableFile(atPath:)) else {
      throw XCTSkip("mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev; make test installs them)")
    }
    return found
  }

  /// The options every job here uses: root allowed (containers), more processes than cores, and
  /// shared memory without the single-copy mechanism containers often forbid.
  static let mpirunOptions = ["--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none"]

  struct Run {
    var status: Int32
    var stdout: String
    var stderr: String
    var seconds: Double
    var timedOut: Bool
  }

  /// Runs `executable` to its end or for `timeout` seconds at most (then kills it), output in files
  /// (no pipe to fill) read back at the end. `whileRunning` is called every 20 ms with the process;
  /// returning true stops the calls.
  func run(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:], timeout: Double = 300,
    whileRunning: ((Process) -> Bool)? = nil
  ) throws -> Run {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mpi-run-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let errorFile = directory.appendingPathComponent("stderr-\(UUID().uuidString)")
    let outputFile = directory.appendingPathComponent("stdout-\(UUID().uuidString)")
    _ = FileManager.default.createFile(atPath: errorFile.path, contents: nil)
    _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
    defer {
      try? FileManager.default.removeItem(at: errorFile)
      try? FileManager.default.removeItem(at: outputFile)
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    process.standardOutput = try FileHandle(forWritingTo: outputFile)
    process.standardError = try FileHandle(forWritingTo: errorFile)
    let start = Date()
    try process.run()
    var watching = whileRunning != nil
    while process.isRunning, Date().timeIntervalSince(start) < timeout {
      if watching, let whileRunning, whileRunning(process) { watching = false }
      usleep(20_000)
    }
    let timedOut = process.isRunning
    if timedOut {
      kill(process.processIdentifier, SIGKILL)
    }
    process.waitUntilExit()
    let stderr = (try? String(contentsOf: errorFile, encoding: .utf8)) ?? ""
    let stdout = (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
    return Run(
      status: process.terminationStatus, stdout: stdout, stderr: stderr, seconds: Date().timeIntervalSince(start), timedOut: timedOut)
  }

  func distillBinary() throws -> String {
    let binary = Bundle.main.bundleURL.appendingPathComponent("distill").path
    guard FileManager.default.isExecutableFile(atPath: binary) else { throw XCTSkip("distill binary not built at \(binary); run swift build first") }
    return binary
  }

  /// `mpirun -np processes distill train ARGUMENTS`.
  func trainMPI(_ processes: Int, _ arguments: [String], timeout: Double = 300, whileRunning: ((Process) -> Bool)? = nil) throws -> Run {
    try run(try mpirun(), Self.mpirunOptions + ["-np", "\(processes)", try distillBinary(), "train"] + arguments, timeout: timeout, whileRunning: whileRunning)
  }

  /// A config in a fresh directory writing to `DIRECTORY/run`: the tiny FCOS teaching the tiny
  /// RetinaNet (no BatchNormalization), or with `batchNormalization` the two ResNet-18-FPN-shaped
  /// models of Tests/Fixtures/distill_step (20 BatchNormalization layers each).
  func config(_ name: String, batchNormalization: String? = nil, batch: Int, steps: Int) throws -> (config: String, output: String) {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mpi-train-\(getpid())-\(name)")
    try? FileManager.default.removeItem(at: directory)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let output = directory.appendingPathComponent("run").path
    let images = fixtures.appendingPathComponent("eval/fcos/images").path
    let text: String
    if let batchNormalization {
      let models = fixtures.appendingPathComponent("distill_step").path
      text = """
        teacher: \(models)/teacher.onnx
        student: \(models)/student.onnx
        data: {images: \(images), size: [64, 64], augment: {hflip: 0.5}}
        \(batchNormalization)
        losses:
          - {type: mse, teacher: [p3, p4], student: [p3, p4]}
          - {type: cwd, teacher: p5, student: p5, temperature: 4.0, weight: 0.5}
        """
    } else {
      let heads = fixtures.appendingPathComponent("heads").path
      let c3 = "/backbone/c3/c3.1/Relu_output_0", c4 = "/backbone/c4/c4.1/Relu_output_0"
      text = """
        teacher: \(heads)/fcos/model.onnx
        student: \(heads)/retinanet/model.onnx
        data: {images: \(images), size: [96, 128], augment: {hflip: 0.5}}
        bn: frozen
        losses:
          - {type: mse, teacher: [\(c3), \(c4)], student: [\(c3), \(c4)]}
          - {type: cwd, teacher: \(c4), student: \(c4), temperature: 4.0, weight: 0.5}
        """
    }
    let path = directory.appendingPathComponent("distill.yaml").path
    // The ResNet pair starts far apart (gradient norm near 100) and normalizes 2x2 maps: with larger
    // steps or smaller batches its training is chaotic, and rounding differences (another OpenBLAS
    // kernel, say) grow past 1e-2 within 6 steps, on one process as on two.
    let rate = batchNormalization == nil ? 0.05 : 0.0005
    let train = """

      train: {steps: \(steps), batch: \(batch), seed: 0, optimizer: {type: sgd, lr: \(rate), momentum: 0.9}, schedule: {type: cosine, warmup: 2},
              checkpoint_every: 2}
      output: \(output)

      """
    try (text + train).write(toFile: path, atomically: true, encoding: .utf8)
    return (path, output)
  }

  /// The metrics.jsonl records, by line.
  func metrics(_ output: String) throws -> [[String: Any]] {
    let text = try String(contentsOfFile: output + "/metrics.jsonl", encoding: .utf8)
    return try text.split(separator: "\n").map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
  }

  /// The float initializers of `path`.
  func weights(_ path: String) throws -> [String: [Float]] {
    let graph = try XCTUnwrap(ModelFile.read(path).graph)
    var result: [String: [Float]] = [:]
    for initializer in graph.initializers {
      let tensor = try Tensor(initializer)
      if tensor.isFloat, let name = initializer.name { result[name] = tensor.floats }
    }
    return result
  }

  /// The largest difference between a tensor of `a` and the same of `b`, relative to the largest
  /// magnitude in the tensor of `a`, over all tensors; and the tensor where it is.
  func largestRelativeDifference(_ a: [String: [Float]], _ b: [String: [Float]]) throws -> (value: Double, tensor: String) {
    XCTAssertEqual(Set(a.keys), Set(b.keys))
    var worst = (value: 0.0, tensor: "")
    for (name, x) in a {
      let y = try XCTUnwrap(b[name])
      XCTAssertEqual(x.count, y.count, name)
      let scale = Double(x.map(abs).max() ?? 0)
      let difference = Double(zip(x, y).map { abs($0 - $1) }.max() ?? 0)
      let relative = scale > 0 ? difference / scale : difference
      if relative > worst.value { worst = (relative, name) }
    }
    return worst
  }

  /// Asserts two metric traces agree: the same steps and keys, equal learning rates, and losses,
  /// terms and gradient norms within `tolerance` (terms relative to the step's loss, the scale
  /// they add up to).
  func assertTracesAgree(_ a: [[String: Any]], _ b: [[String: Any]], file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "steps logged", file: file, line: line)
    for (x, y) in zip(a, b) {
      XCTAssertEqual(Set(x.keys).subtracting(["step_ms"]), Set(y.keys).subtracting(["step_ms"]), file: file, line: line)
      XCTAssertEqual(x["step"] as? Int, y["step"] as? Int, file: file, line: line)
      XCTAssertEqual(x["lr"] as? Double, y["lr"] as? Double, file: file, line: line)
      let loss = abs(x["loss"] as? Double ?? .nan)
      for key in x.keys where !["step", "lr", "step_ms"].contains(key) {
        guard let u = x[key] as? Double, let v = y[key] as? Double else {
          XCTFail("step \(x["step"] ?? "?"): \(key) is not a number", file: file, line: line)
          continue
        }
        let scale = key == "grad_norm" || key == "loss" ? abs(u) : max(abs(u), loss)
        XCTAssertLessThanOrEqual(abs(u - v), tolerance * scale, "step \(x["step"] ?? "?"): \(key) \(u) vs \(v)", file: file, line: line)
      }
    }
  }

  /// One process, then the same config on `processes` processes; returns how far the weights are apart.
  /// `launch` starts the parallel run on a config (by default `mpirun -np processes` on loopback).
  func compareWithOneProcess(
    _ name: String, batchNormalization: String? = nil, batch: Int, steps: Int, processes: Int = 2,
    launch: ((String) throws -> Run)? = nil
  ) throws -> (weights: (value: Double, tensor: String), one: [[String: Any]], many: [[String: Any]], moved: Double) {
    let single = try config(name + "-1", batchNormalization: batchNormalization, batch: batch, steps: steps)
    let one = try run(try distillBinary(), ["train", single.config])
    XCTAssertEqual(one.status, 0, one.stderr)
    let parallel = try config(name + "-\(processes)", batchNormalization: batchNormalization, batch: batch, steps: steps)
    let many = try launch.map { try $0(parallel.config) } ?? trainMPI(processes, [parallel.config])
    XCTAssertEqual(many.status, 0, many.stderr)
    XCTAssertFalse(many.timedOut)
    XCTAssertTrue(many.stderr.contains("data-parallel: \(processes) processes"), many.stderr)
    // Process 0 alone writes: one event file, one log.
    let events = try FileManager.default.contentsOfDirectory(atPath: parallel.output).filter { $0.hasPrefix("events.out.tfevents.") }
    XCTAssertEqual(events.count, 1)
    let trained = try weights(single.output + "/student.onnx")
    let start = batchNormalization == nil ? "heads/retinanet/model.onnx" : "distill_step/student.onnx"
    let initial = try weights(fixtures.appendingPathComponent(start).path).filter { trained[$0.key] != nil }
    let moved = try largestRelativeDifference(trained.filter { initial[$0.key] != nil }, initial).value
    return (
      try largestRelativeDifference(trained, try weights(parallel.output + "/student.onnx")), try metrics(single.output), try metrics(parallel.output),
      moved
    )
  }

  func testTwoProcessesEqualOneWithFrozenBatchNormalization() throws {
    let result = try compareWithOneProcess("frozen", batch: 4, steps: 6)
    XCTAssertGreaterThan(result.moved, 100 * tolerance, "training moved the weights well past the tolerance")
    XCTAssertLessThanOrEqual(result.weights.value, tolerance, "worst in \(result.weights.tensor)")
    assertTracesAgree(result.one, result.many)
    XCTAssertEqual(result.many.count, 7)
  }

  /// `bn: train` with `sync_bn: true`, on a global batch of 5 cut 3 + 2: the statistics, their
  /// gradients and the loss are the global batch's, so the run is the one-process run. Without
  /// `sync_bn` each process normalizes with its own slice's statistics and the runs part.
  func testSynchronizedBatchNormalizationEqualsOneProcessWithUnevenSlices() throws {
    let synchronized = try compareWithOneProcess("sync", batchNormalization: "bn: train\nsync_bn: true", batch: 5, steps: 6)
    XCTAssertGreaterThan(synchronized.moved, 100 * tolerance)
    XCTAssertLessThanOrEqual(synchronized.weights.value, tolerance, "worst in \(synchronized.weights.tensor)")
    assertTracesAgree(synchronized.one, synchronized.many)
    let perProcess = try compareWithOneProcess("per-process", batchNormalization: "bn: train", batch: 5, steps: 6)
    XCTAssertGreaterThan(perProcess.weights.value, 100 * tolerance, "per-process statistics differ from the global batch's")
  }

  /// SIGKILL to process 1 mid-run: the job ends within seconds, naming the process and the signal;
  /// the checkpoint process 0 wrote last is valid, and the run resumes from it on 3 processes and
  /// then finishes with every step logged once.
  func testAKilledProcessEndsTheJobAndTheRunResumesOnAnotherCount() throws {
    let (path, output) = try config("killed", batch: 4, steps: 40)
    var killedAt: Date?
    let killed = try trainMPI(2, [path], timeout: 240) { mpirun in
      guard ((try? self.metrics(output).count) ?? 0) >= 6, FileManager.default.fileExists(atPath: output + "/checkpoint") else { return false }
      guard let rank1 = Self.child(of: mpirun.processIdentifier, rank: 1) else { return false }
      kill(rank1, SIGKILL)
      killedAt = Date()
      return true
    }
    let ended = try XCTUnwrap(killedAt, "process 1 was never found and killed: \(killed.stderr)")
    XCTAssertFalse(killed.timedOut, "the job hung after a process died")
    XCTAssertLessThan(Date().timeIntervalSince(ended), 30, "the job ended within seconds")
    XCTAssertNotEqual(killed.status, 0)
    XCTAssertTrue(killed.stderr.contains("rank 1") && killed.stderr.contains("signal 9"), killed.stderr)
    let logged = try metrics(output).count
    XCTAssertLessThan(logged, 41)

    let resumed = try trainMPI(3, [path, "--resume"])
    XCTAssertEqual(resumed.status, 0, resumed.stderr)
    XCTAssertTrue(resumed.stderr.contains("resumed at step"), resumed.stderr)
    XCTAssertEqual(try metrics(output).map { $0["step"] as? Int }, Array(0...40), "each step logged once, in order")
    XCTAssertTrue(FileManager.default.fileExists(atPath: output + "/student.onnx"))
  }

  /// Data no process can read: the job stops at once with the error of a named process.
  func testUnreadableDataEndsTheJobNamingTheProcess() throws {
    let (path, _) = try config("no-data", batch: 4, steps: 4)
    let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "eval/fcos/images", with: "eval/fcos/missing")
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    let result = try trainMPI(2, [path], timeout: 120)
    XCTAssertFalse(result.timedOut)
    XCTAssertNotEqual(result.status, 0)
    XCTAssertTrue(result.stderr.contains("error on process"), result.stderr)
    XCTAssertTrue(result.stderr.contains("missing does not exist"), result.stderr)
  }

  /// More processes than samples in a batch is refused, by every process, before any training.
  func testMoreProcessesThanBatchIsRefused() throws {
    let (path, output) = try config("too-many", batch: 2, steps: 3)
    let result = try trainMPI(3, [path], timeout: 120)
    XCTAssertNotEqual(result.status, 0)
    XCTAssertTrue(result.stderr.contains("train.batch 2 is smaller than the 3 processes"), result.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: output + "/metrics.jsonl"))
  }

  /// Started as if by mpirun, but with no Open MPI to load: a clear error, no crash. (Needs no mpirun.)
  func testLauncherWithoutMPISaysSo() throws {
    let (path, output) = try config("no-mpi", batch: 2, steps: 3)
    let result = try run(
      try distillBinary(), ["train", path],
      environment: ["OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0", "DISTILL_MPI_LIBRARY": "/nonexistent/libmpi.so.40"], timeout: 60)
    XCTAssertEqual(result.status, 1, result.stderr)
    XCTAssertTrue(result.stderr.contains("started by an MPI launcher as rank 0 of 2, but Open MPI cannot be loaded"), result.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: output))
  }

  /// The process `mpirun` (pid `parent`) started as `rank`, found through /proc.
  static func child(of parent: Int32, rank: Int) -> Int32? {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
    for entry in entries {
      guard let pid = Int32(entry),
        let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
      else { continue }
      let fields = stat[stat.index(after: close)...].split(separator: " ")
      guard fields.count > 1, Int32(fields[1]) == parent,
        let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ")
      else { continue }
      if environment.split(separator: 0).contains(where: { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=\(rank)" }) { return pid }
    }
    return nil
  }
}
