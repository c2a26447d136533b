import ArgumentParser
import DistillCore
import DistillDetection
import DistillONNX
import Foundation

struct Run: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run a model on inputs and print or save its outputs (and tapped intermediate values).",
    discussion: """
      Inputs come from --input NAME=PATH (an ONNX TensorProto .pb, a .npy array, or a PNG/JPEG image \
      resized to --size and normalised with --mean/--std) or from --data DIR holding input_0.pb, \
      input_1.pb, ... in graph-input order (the ONNX test-data layout). With --output-dir the outputs \
      are written as output_0.pb, output_1.pb, ... in graph-output order, and taps as tap_0.pb, ... in \
      the order given; otherwise each output's name, dtype, shape and min/max/mean are printed.
      """)

  @Argument(help: "The ONNX model to run.") var model: String
  @Option(name: .long, help: "An input as NAME=PATH (.pb, .npy, .png, .jpg); repeatable.") var input: [String] = []
  @Option(name: .long, help: "A directory with input_0.pb, input_1.pb, ... in graph-input order.") var data: String?
  @Option(name: .customLong("output-dir"), help: "Write outputs (and taps) as TensorProto files here.") var outputDirectory: String?
  @Option(name: .long, help: "Also keep this intermediate value (a node output name); repeatable.") var tap: [String] = []
  @OptionGroup var image: ImageOptions
  @Option(name: .customLong("memory-budget-mb"), help: "Largest tensor one operator may allocate, in MB.")
  var memoryBudget: Int?

  func run() throws {
    let loaded = try ModelFile.read(model)
    let interpreter = try Interpreter(model: loaded, keep: Set(tap))
    if let memoryBudget { interpreter.memoryBudget = memoryBudget << 20 }
    let feeds = try InputLoader(graph: loaded.graph!, image: image).feeds(arguments: input, dataDirectory: data)
    let result = try interpreter.run(feeds, taps: Set(tap))
    let outputs = loaded.graph!.outputs
    if let outputDirectory {
      try FileManager.default.createDirectory(atPath: outputDirectory, withIntermediateDirectories: true)
      for (index, value) in result.outputs.enumerated() {
        try ModelFile.writeTensor(value.tensorValue(name: outputs[index].name), to: "\(outputDirectory)/output_\(index).pb")
      }
      for (index, name) in tap.enumerated() {
        try ModelFile.writeTensor(result.taps[name]!.tensorValue(name: name), to: "\(outputDirectory)/tap_\(index).pb")
      }
      print("wrote \(result.outputs.count) outputs\(tap.isEmpty ? "" : " and \(tap.count) taps") to \(outputDirectory)")
      return
    }
    for (index, value) in result.outputs.enumerated() { print(summary(outputs[index].name, value)) }
    for name in tap { print("tap " + summary(name, result.taps[name]!)) }
  }

  func summary(_ name: String, _ tensor: Tensor) -> String {
    let values = tensor.doubles
    guard !values.isEmpty else { return "\(name)  \(tensor.dtype) \(tensor.shapeDescription)  (empty)" }
    let minimum = values.min()!, maximum = values.max()!, mean = values.reduce(0, +) / Double(values.count)
    return "\(name)  \(tensor.dtype) \(tensor.shapeDescription)  min \(format(minimum)) max \(format(maximum)) mean \(format(mean))"
  }

  func format(_ value: Double) -> String { String(format: "%.6g", value) }
}

/// How images become input tensors.
struct ImageOptions: ParsableArguments {
  @Option(name: .long, help: "Resize images to HEIGHTxWIDTH (default: the input's declared size).") var size: String?
  @Option(name: .long, help: "Per-channel mean subtracted after scaling pixels to [0, 1].") var mean: String = "0,0,0"
  @Option(name: .long, help: "Per-channel standard deviation divided by after subtracting the mean.") var std: String = "1,1,1"
}

/// Builds the feeds of a graph from command-line arguments.
struct InputLoader {
  let graph: Graph
  let image: ImageOptions

  var inputs: [ValueInfo] { graph.inputs.filter { input in !graph.initializers.contains { $0.name == input.name } } }

  func feeds(arguments: [String], dataDirectory: String?) throws -> [String: Tensor] {
    var feeds: [String: Tensor] = [:]
    if let dataDirectory {
      for (index, input) in inputs.enumerated() {
        let path = "\(dataDirectory)/input_\(index).pb"
        guard FileManager.default.fileExists(atPath: path) else {
          throw ValidationError("--data \(dataDirectory): \(path) is missing (input \(index), '\(input.name)')")
        }
        feeds[input.name] = try Tensor(ModelFile.readTensor(path))
      }
    }
    for argument in arguments {
      guard let equals = argument.firstIndex(of: "=") else {
        throw ValidationError("--input \(argument): expected NAME=PATH")
      }
      let name = String(argument[..<equals]), path = String(argument[argument.index(after: equals)...])
      guard let info = inputs.first(where: { $0.name == name }) else {
        throw ValidationError("--input \(name): the model has no input of that name; inputs: " + inputs.map(\.name).joined(separator: ", "))
      }
      feeds[name] = try load(path, for: info)
    }
    let missing = inputs.filter { feeds[$0.name] == nil }.map(\.name)
    if !missing.isEmpty {
      throw ValidationError("no value for input(s) \(missing.joined(separator: ", ")); pass --input NAME=PATH or --data DIR")
    }
    return feeds
  }

  func load(_ path: String, for info: ValueInfo) throws -> Tensor {
    let lower = path.lowercased()
    if lower.hasSuffix(".pb") { return try Tensor(ModelFile.readTensor(path)) }
    if lower.hasSuffix(".npy") { return try NumpyFile.read(path) }
    if [".png", ".jpg", ".jpeg"].contains(where: { lower.hasSuffix($0) }) {
      let declared = info.type?.shape?.map { $0.size.map(Int.init) }
      var size: (height: Int, width: Int)?
      if let text = image.size {
        let parts = text.split(separator: "x").compactMap { Int($0) }
        guard parts.count == 2, parts.allSatisfy({ $0 > 0 }) else { throw ValidationError("--size \(text): expected HEIGHTxWIDTH") }
        size = (parts[0], parts[1])
      } else if let declared, declared.count == 4, let h = declared[2], let w = declared[3] {
        size = (h, w)
      }
      let mean = try channelTriple(image.mean, "--mean"), std = try channelTriple(image.std, "--std")
      var picture = try Image.load(path)
      if let size { picture = picture.resized(width: size.width, height: size.height) }
      return picture.tensor(mean: mean, std: std)
    }
    throw ValidationError("--input \(info.name)=\(path): unsupported file type; use .pb, .npy, .png or .jpg")
  }
}

/// Three comma-separated per-channel numbers (`--mean`, `--std`); a standard deviation of 0 is refused.
func channelTriple(_ text: String, _ option: String) throws -> [Float] {
  let values = text.split(separator: ",").compactMap { Float($0.trimmingCharacters(in: .whitespaces)) }
  guard values.count == 3 else { throw ValidationError("\(option) \(text): expected three comma-separated numbers") }
  if option == "--std", values.contains(0) { throw ValidationError("--std \(text): a standard deviation cannot be 0") }
  return values
}
