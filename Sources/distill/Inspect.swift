import ArgumentParser
import DistillCore
import DistillONNX
import DistillTrain
import Foundation

struct Inspect: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Summarize an ONNX model: inputs, outputs, parameters, ops, nodes and likely distillation taps.",
    discussion: """
      Output shapes come from static shape inference; symbolic input dims stay unknown unless fixed \
      with --input-shape. Likely taps are the feature maps (FPN levels) that feed the detection head \
      and the head outputs; pass their names to training as teacher/student taps.
      """)

  @Argument(help: "The ONNX model to inspect.") var model: String
  @Option(name: .long, help: "Show only nodes whose name or op type matches this regular expression.")
  var nodes: String?
  @Option(name: .customLong("input-shape"), help: "Fix a graph input's shape for shape inference (repeatable).")
  var inputShapes: [ShapeArgument] = []
  @Flag(name: .long, help: "Print one JSON object instead of text.") var json = false

  func run() throws {
    let filter: Regex<AnyRegexOutput>?
    do { filter = try nodes.map { try Regex($0) } } catch {
      throw ValidationError("--nodes '\(nodes ?? "")' is not a valid regular expression: \(error)")
    }
    let model = try ModelFile.read(self.model)
    guard let graph = model.graph else { return }
    let fixed = Dictionary(inputShapes.map { ($0.name, $0.dims) }, uniquingKeysWith: { _, last in last })
    for name in fixed.keys where !graph.inputs.contains(where: { $0.name == name }) {
      throw ValidationError("--input-shape \(name): the model has no input of that name; inputs: "
        + graph.inputs.map(\.name).joined(separator: ", "))
    }
    let report = ModelReport(model: model, path: self.model, graph: graph, fixedInputs: fixed, filter: filter)
    if json {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
      print(String(decoding: try encoder.encode(report), as: UTF8.self))
    } else {
      print(report.text)
    }
  }
}

/// Everything `inspect` shows, encodable as its JSON output.
struct ModelReport: Encodable {
  struct Value: Encodable {
    let name: String
    let dtype: String
    let shape: String
  }
  struct Tensor: Encodable {
    let name: String
    let dtype: String
    let shape: [Int64]
    let bytes: Int
  }
  struct NodeRow: Encodable {
    let name: String
    let op: String
    let domain: String
    let inputs: [String]
    let outputs: [String]
    let outputShapes: [String]
    let known: Bool

    enum CodingKeys: String, CodingKey {
      case name, op, domain, inputs, outputs, known
      case outputShapes = "output_shapes"
    }
  }
  struct Tap: Encodable {
    let name: String
    let stride: Int?
    let shape: String
    let producer: String
  }
  struct Taps: Encodable {
    let features: [Tap]
    let headOutputs: [Tap]
    enum CodingKeys: String, CodingKey {
      case features
      case headOutputs = "head_outputs"
    }
  }

  let file: String
  let irVersion: Int64?
  let opsets: [String: Int64]
  let producer: String
  let inputs: [Value]
  let outputs: [Value]
  let initializers: [Tensor]
  let parameterCount: Int
  let parameterBytes: Int
  let opHistogram: [String: Int]
  let unknownOps: [String]
  let nodes: [NodeRow]
  let taps: Taps
  /// What a user should know about how distill reads this model (each said once).
  let notes: [String]
  /// What training updates and checkpoints store, in order (merged parameters untied).
  let parameters: [Parameter]

  struct Parameter: Encodable {
    let name: String
    let dtype: String
    let shape: [Int]
    /// The model's tensor whose values this parameter starts from (itself unless an untied copy).
    let initial: String
  }

  enum CodingKeys: String, CodingKey {
    case file, opsets, producer, inputs, outputs, initializers, nodes, taps, notes, parameters
    case irVersion = "ir_version"
    case parameterCount = "parameter_count"
    case parameterBytes = "parameter_bytes"
    case opHistogram = "op_histogram"
    case unknownOps = "unknown_ops"
  }

  init(model: Model, path: String, graph: Graph, fixedInputs: [String: [Int]], filter: Regex<AnyRegexOutput>?) {
    var opsetVersions: [String: Int] = [:]
    for opset in model.opsetImports { opsetVersions[Graph.canonicalDomain(opset.domain ?? "")] = Int(opset.version) }
    let shapes = ShapeInference.infer(graph, inputShapes: fixedInputs, opsets: opsetVersions)
    func value(_ info: ValueInfo) -> Value {
      let inferred = shapes[info.name]
      let type = info.type?.elementType ?? inferred?.type
      let declared = info.type?.shape.map { "[" + $0.map(\.description).joined(separator: ",") + "]" }
      let shape = fixedInputs[info.name] != nil ? inferred?.shapeDescription : (declared ?? inferred?.shapeDescription)
      return Value(name: info.name, dtype: type?.description ?? "?", shape: shape ?? "?")
    }
    file = path
    irVersion = model.irVersion
    opsets = Dictionary(
      model.opsetImports.map { (Graph.canonicalDomain($0.domain ?? "").isEmpty ? "ai.onnx" : $0.domain!, $0.version) },
      uniquingKeysWith: { _, last in last })
    producer = [model.producerName, model.producerVersion].compactMap { $0 }.joined(separator: " ")
    inputs = graph.inputs.filter { input in !graph.initializers.contains { $0.name == input.name } }.map(value)
    outputs = graph.outputs.map(value)
    initializers = graph.initializers.map {
      Tensor(name: $0.name ?? "", dtype: $0.dataType.description, shape: $0.dims, bytes: $0.bytes.count)
    }
    let floatTensors = graph.allTensors.filter { $0.dataType.isFloatingPoint }
    parameterCount = floatTensors.reduce(0) { $0 + $1.elementCount }
    parameterBytes = floatTensors.reduce(0) { $0 + $1.bytes.count }
    var histogram: [String: Int] = [:]
    var unknown = Set<String>()
    let allNodes = graph.nodes + graph.nestedGraphs.flatMap(\.nodes)
    for node in allNodes {
      histogram[node.qualifiedOp, default: 0] += 1
      if OpSchema.arity(of: node.opType, domain: node.domain) == nil { unknown.insert(node.qualifiedOp) }
    }
    opHistogram = histogram
    unknownOps = unknown.sorted()
    nodes = graph.nodes.filter { node in
      guard let filter else { return true }
      return node.name.contains(filter) || node.opType.contains(filter)
    }.map { node in
      NodeRow(
        name: node.name, op: node.opType, domain: node.domain, inputs: node.inputs, outputs: node.outputs,
        outputShapes: node.outputs.map { shapes[$0]?.shapeDescription ?? "?" },
        known: OpSchema.arity(of: node.opType, domain: node.domain) != nil)
    }
    let suggestions = TapFinder.suggest(graph, shapes: shapes)
    func select(_ kind: TapSuggestion.Kind) -> [Tap] {
      suggestions.filter { $0.kind == kind }.map { Tap(name: $0.name, stride: $0.stride, shape: $0.shape, producer: $0.producer) }
    }
    taps = Taps(features: select(.feature), headOutputs: select(.headOutput))
    notes = Self.notes(graph)
    var origin: [String: String] = [:]
    for entry in MergedParameters.untie(graph).untied { for copy in entry.copies { origin[copy] = entry.original } }
    parameters = ((try? TrainedWeights.parameters(of: model)) ?? []).map {
      Parameter(name: $0.name, dtype: $0.dtype.description, shape: $0.shape, initial: origin[$0.name] ?? $0.name)
    }
  }

  static func notes(_ graph: Graph) -> [String] {
    var notes: [String] = []
    let declared = ([graph] + graph.nestedGraphs).flatMap { $0.inputs + $0.outputs + $0.valueInfo }
    let negative = declared.filter { $0.type?.shape?.contains(where: \.isNegative) ?? false }.map(\.name)
    if !negative.isEmpty {
      let shown = negative.prefix(5).map { "'\($0)'" }.joined(separator: ", ") + (negative.count > 5 ? " and \(negative.count - 5) more" : "")
      notes.append(
        "\(shown) declare\(negative.count == 1 ? "s" : "") -1 for a dimension, as older paddle2onnx and tf2onnx exports do "
          + "for a dynamic one: read as unknown (shown as ?), written back as -1")
    }
    let untied = MergedParameters.untie(graph).untied
    if !untied.isEmpty {
      let copies = untied.reduce(0) { $0 + $1.copies.count }
      let example = untied[0]
      notes.append(
        "the exporter merged parameters with equal values: \(untied.count) tensors stand for \(copies + untied.count) "
          + "(e.g. '\(example.original)' is also read as \(example.copies.prefix(3).map { "'\($0)'" }.joined(separator: ", "))"
          + "\(example.copies.count > 3 ? ", ..." : "")); ONNX gradients sum over each merged tensor's readers, so training "
          + "gives each layer its own copy, and export writes the copies as initializers of their own")
    }
    return notes
  }

  var text: String {
    var lines: [String] = []
    lines.append("model \(file)")
    let opsetText = opsets.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    lines.append("  ir_version \(irVersion.map(String.init) ?? "?"), opsets: \(opsetText)")
    if !producer.isEmpty { lines.append("  producer: \(producer)") }
    lines.append(
      "  parameters: \(parameterCount.formatted()) (\(formatBytes(parameterBytes))) in \(initializers.count) initializers and Constant nodes")
    lines.append("inputs:")
    for input in inputs { lines.append("  \(input.name)  \(input.dtype) \(input.shape)") }
    lines.append("outputs:")
    for output in outputs { lines.append("  \(output.name)  \(output.dtype) \(output.shape)") }
    let histogram = opHistogram.sorted { ($1.value, $0.key) < ($0.value, $1.key) }.map { "\($0.key) \($0.value)" }
    lines.append("ops: " + histogram.joined(separator: ", "))
    if !unknownOps.isEmpty {
      lines.append("ops this build does not know (inspect and export work; running them does not): "
        + unknownOps.joined(separator: ", "))
    }
    for note in notes { lines.append("note: " + note) }
    lines.append("nodes (\(nodes.count)):")
    let nameWidth = min(48, nodes.map(\.name.count).max() ?? 0)
    let opWidth = min(24, nodes.map { ($0.domain.isEmpty ? $0.op : "\($0.domain)::\($0.op)").count }.max() ?? 0)
    for node in nodes {
      let op = node.domain.isEmpty ? node.op : "\(node.domain)::\(node.op)"
      let outputs = zip(node.outputs, node.outputShapes).map { "\($0) \($1)" }.joined(separator: ", ")
      lines.append(
        "  \(node.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0))  "
          + "\(op.padding(toLength: opWidth, withPad: " ", startingAt: 0))  "
          + "\(node.inputs.joined(separator: ", ")) -> \(outputs)")
    }
    if taps.features.isEmpty {
      lines.append("likely taps: none found (no head reading feature maps at two or more strides)")
    } else {
      lines.append("likely taps (feature maps feeding the head, by stride):")
      for tap in taps.features { lines.append("  stride \(tap.stride.map(String.init) ?? "?")  \(tap.name)  \(tap.shape)  from \(tap.producer)") }
      lines.append("head outputs:")
      for tap in taps.headOutputs { lines.append("  stride \(tap.stride.map(String.init) ?? "?")  \(tap.name)  \(tap.shape)  from \(tap.producer)") }
    }
    return lines.joined(separator: "\n")
  }
}

func formatBytes(_ bytes: Int) -> String {
  let units = ["B", "KB", "MB", "GB"]
  var value = Double(bytes)
  var unit = 0
  while value >= 1000 && unit < units.count - 1 {
    value /= 1000
    unit += 1
  }
  return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}

extension Node {
  /// `Conv`, or `com.example::MyOp` outside the default domain.
  var qualifiedOp: String { Graph.canonicalDomain(domain).isEmpty ? opType : "\(domain)::\(opType)" }
}
