import ArgumentParser
import DistillCore
import DistillONNX
import Foundation

struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Time forward passes of a model on random inputs.",
    discussion: """
      Runs --warmup passes, then --runs timed ones, printing each time to stderr. The last line of \
      stdout is a JSON object with forward_ms_median, forward_ms_min, forward_ms_mean, runs, threads \
      and peak_rss_mb. tools/bench_ort.py measures onnxruntime on the same model, input and threads.
      """)

  @Argument(help: "The ONNX model to time.") var model: String
  @Option(name: .long, help: "An input shape as NAME=8x3x320x320 (random uniform values in [0, 1)); repeatable.")
  var input: [ShapeArgument] = []
  @Option(name: .long, help: "Timed passes.") var runs = 10
  @Option(name: .long, help: "Untimed passes first.") var warmup = 2
  @Option(name: .long, help: "Threads (default: all cores).") var threads: Int?
  @Flag(name: .long, help: "Print the time spent in each op type (summed over the timed runs) to stderr.")
  var profile = false
  @Flag(
    name: .long,
    help:
      "Also time training steps: a recorded forward pass (BatchNormalization on batch statistics) and the backward pass to every parameter, BatchNormalization not folded; train_to_forward_ratio compares them with the inference forward.")
  var train = false

  func validate() throws {
    guard runs >= 1 else { throw ValidationError("--runs must be at least 1") }
    guard warmup >= 0 else { throw ValidationError("--warmup cannot be negative") }
    if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
  }

  func run() throws {
    let loaded = try ModelFile.read(model)
    let interpreter = try Interpreter(model: loaded)
    // Training keeps BatchNormalization (batch statistics) and every parameter apart.
    let trainer = train ? try Interpreter(model: loaded, foldBatchNorm: false, promoteConstants: true) : nil
    let threadCount = threads ?? ProcessInfo.processInfo.activeProcessorCount
    Parallel.threads = threadCount
    BLAS.threads = threadCount
    var generator = SystemRandomNumberGenerator()
    var feeds: [String: Tensor] = [:]
    let shapes = Dictionary(input.map { ($0.name, $0.dims) }, uniquingKeysWith: { _, last in last })
    for info in interpreter.requiredInputs {
      let declared = info.type?.shape?.map { $0.size.map(Int.init) }
      guard let shape = shapes[info.name] ?? declared.flatMap({ $0.allSatisfy { $0 != nil } ? $0.map { $0! } : nil }) else {
        throw ValidationError("input '\(info.name)' has symbolic dims; give its shape with --input \(info.name)=1x3x320x320")
      }
      let count = shape.reduce(1, *)
      let type = info.type?.elementType ?? .float
      if type.isFloatingPoint {
        feeds[info.name] = Tensor(shape: shape, floats: (0..<count).map { _ in Float.random(in: 0..<1, using: &generator) }, dtype: type)
      } else {
        feeds[info.name] = Tensor(shape: shape, ints: [Int64](repeating: 0, count: count), dtype: type)
      }
    }
    for name in shapes.keys where !interpreter.requiredInputs.contains(where: { $0.name == name }) {
      throw ValidationError("--input \(name): the model has no input of that name")
    }
    for pass in 0..<warmup {
      let time = try measure { _ = try interpreter.run(feeds) }
      FileHandle.standardError.write(Data("warm-up \(pass + 1)/\(warmup): \(String(format: "%.1f", time)) ms\n".utf8))
    }
    if profile {
      interpreter.profile = [:]
      trainer?.profile = [:]
    }
    var times: [Double] = []
    for pass in 0..<runs {
      let time = try measure { _ = try interpreter.run(feeds) }
      times.append(time)
      FileHandle.standardError.write(Data("run \(pass + 1)/\(runs): \(String(format: "%.1f", time)) ms\n".utf8))
    }
    func median(_ values: [Double]) -> Double {
      let sorted = values.sorted()
      return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }
    var trainTimes: [Double] = []
    if let trainer {
      let parameters = Set(trainer.parameterNames)
      for pass in 0..<runs {
        let time = try measure {
          let tape = try trainer.record(feeds, training: true)
          var seeds: [String: Tensor] = [:]
          for (index, output) in tape.outputs.enumerated() where output.isFloat {
            seeds[trainer.graph.outputs[index].name] = Tensor(shape: output.shape, floats: [Float](repeating: 1, count: output.count), dtype: output.dtype)
          }
          _ = try tape.gradients(seeds: seeds, targets: parameters)
        }
        trainTimes.append(time)
        FileHandle.standardError.write(Data("train step \(pass + 1)/\(runs): \(String(format: "%.1f", time)) ms\n".utf8))
      }
    }
    for (title, spent) in [("forward", interpreter.profile), ("training step", trainer?.profile)] {
      guard let spent else { continue }
      FileHandle.standardError.write(Data("time per \(title), by op type:\n".utf8))
      let total = spent.values.reduce(0, +)
      for (op, ms) in spent.sorted(by: { $0.value > $1.value }) {
        FileHandle.standardError.write(Data(String(format: "%-24@ %10.1f ms %5.1f%%\n", op as NSString, ms / Double(runs), ms / total * 100).utf8))
      }
    }
    let sorted = times.sorted()
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    var report: [String: Any] = [
      "model": model, "runs": runs, "threads": threadCount, "blas_core": BLAS.coreName,
      "forward_ms_median": (median(times) * 100).rounded() / 100, "forward_ms_min": (sorted[0] * 100).rounded() / 100,
      "forward_ms_mean": (times.reduce(0, +) / Double(times.count) * 100).rounded() / 100,
      "peak_rss_mb": (Double(usage.ru_maxrss) / 1024 * 10).rounded() / 10,
      "inputs": feeds.mapValues { $0.shape },
    ]
    if train {
      report["train_step_ms_median"] = (median(trainTimes) * 100).rounded() / 100
      report["train_to_forward_ratio"] = (median(trainTimes) / median(times) * 1000).rounded() / 1000
    }
    let json = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys, .withoutEscapingSlashes])
    print(String(decoding: json, as: UTF8.self))
  }

  func measure(_ body: () throws -> Void) throws -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
  }
}
