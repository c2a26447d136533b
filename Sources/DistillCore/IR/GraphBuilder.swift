/// Emits standard ONNX nodes into a `Graph` with unique value names: the way loss graphs (and
/// later adapters) are written. Every value name a builder returns is defined exactly once, so the
/// graph it produces is valid ONNX (in topological order) and can be written with `ModelFile.write`.
///
/// Values are named `<prefix>/<hint>_<n>`; constants become initializers, declared inputs carry
/// their dtype and shape (nil dims are symbolic, named after the input), and `parameter` adds a
/// float initializer that is listed in `parameters` as trainable.
public struct GraphBuilder: Sendable {
  public private(set) var graph: Graph
  /// The default-domain opset the emitted nodes follow (attribute vs input forms are chosen for it).
  public let opset: Int
  /// Initializers added with `parameter`, in order: the values a trainer may update.
  public private(set) var parameters: [String] = []
  private var used: [String: Int] = [:]
  private var taken: Set<String> = []
  private var scalarCache: [UInt32: String] = [:]
  private var intsCache: [[Int64]: String] = [:]
  /// Prefix of generated value names (the scope of the nodes being emitted).
  public var scope: String = ""

  /// The opset this builder writes for by default (ReduceSum takes `axes` as an input, ReduceMean
  /// and the other reductions as an attribute).
  public static let defaultOpset = 17

  public init(name: String, opset: Int = GraphBuilder.defaultOpset) {
    graph = Graph()
    graph.name = name
    self.opset = opset
  }

  /// A fresh value name from `hint`, unique in this graph: the hint itself when free, else
  /// `<hint>_<n>`.
  public mutating func uniqueName(_ hint: String) -> String {
    let base = scope.isEmpty ? hint : "\(scope)/\(hint)"
    var count = used[base, default: 0]
    var name = count == 0 && !base.isEmpty ? base : "\(base)_\(count)"
    while taken.contains(name) {
      count += 1
      name = "\(base)_\(count)"
    }
    used[base] = count + 1
    taken.insert(name)
    return name
  }

  /// Declares a graph input. A nil dim is symbolic (`<name>_d<axis>`), so the size may change from
  /// run to run (a count of foreground rows, for example).
  @discardableResult
  public mutating func input(_ name: String, shape: [Int?], dtype: DataType = .float) -> String {
    precondition(!taken.contains(name), "value name '\(name)' is already used")
    taken.insert(name)
    let dims = shape.enumerated().map { axis, size in
      size.map { ShapeDimension(value: Int64($0)) } ?? ShapeDimension(param: "\(name)_d\(axis)")
    }
    graph.inputs.append(ValueInfo(name: name, type: .tensor(elementType: dtype, shape: dims, denotation: nil)))
    return name
  }

  /// A constant initializer holding `tensor`.
  public mutating func constant(_ tensor: Tensor, hint: String = "const") -> String {
    let name = uniqueName(hint)
    graph.initializers.append(tensor.tensorValue(name: name))
    return name
  }

  /// A float scalar constant (shape []); equal values share one initializer.
  public mutating func scalar(_ value: Float) -> String {
    if let name = scalarCache[value.bitPattern] { return name }
    let name = constant(Tensor(scalar: value), hint: "scalar")
    scalarCache[value.bitPattern] = name
    return name
  }

  /// A 1-D int64 constant (axes, shapes, indices); equal lists share one initializer.
  public mutating func ints(_ values: [Int]) -> String {
    let key = values.map(Int64.init)
    if let name = intsCache[key] { return name }
    let name = constant(Tensor(shape: [values.count], ints: key), hint: "ints")
    intsCache[key] = name
    return name
  }

  /// A trainable float initializer named `name` (unique), listed in `parameters`.
  public mutating func parameter(_ tensor: Tensor, name: String) -> String {
    precondition(!taken.contains(name), "value name '\(name)' is already used")
    taken.insert(name)
    graph.initializers.append(tensor.tensorValue(name: name))
    parameters.append(name)
    return name
  }

  /// Appends one node of the default domain and returns its output names (`outputs` of them).
  @discardableResult
  public mutating func add(
    _ op: String, _ inputs: [String], _ attributes: [Attribute] = [], outputs: Int, hint: String? = nil
  )
    -> [String]
  {
    let base = hint ?? op.lowercased()
    let names = (0..<outputs).map { index in uniqueName(outputs == 1 ? base : "\(base)\(index)") }
    graph.nodes.append(Node(name: names[0], opType: op, inputs: inputs, outputs: names, attributes: attributes))
    return names
  }

  /// Appends one single-output node of the default domain and returns its output name.
  public mutating func add(_ op: String, _ inputs: [String], _ attributes: [Attribute] = [], hint: String? = nil)
    -> String
  {
    add(op, inputs, attributes, outputs: 1, hint: hint)[0]
  }

  /// Declares `value` a graph output (float, rank unknown unless `shape` is given).
  public mutating func output(_ value: String, shape: [Int]? = nil, dtype: DataType = .float) {
    let dims = shape?.map { ShapeDimension(value: Int64($0)) }
    graph.outputs.append(ValueInfo(name: value, type: .tensor(elementType: dtype, shape: dims, denotation: nil)))
  }

  /// The graph as a model (ir_version 8, the default-domain opset of this builder).
  public var model: Model {
    var model = Model()
    model.irVersion = 8
    model.producerName = "distill"
    model.opsetImports = [OperatorSetID(domain: "", version: Int64(opset))]
    model.graph = graph
    return model
  }
}

extension Attribute {
  public static func int(_ name: String, _ value: Int) -> Attribute { Attribute(name: name, value: .int(Int64(value))) }
  public static func ints(_ name: String, _ values: [Int]) -> Attribute {
    Attribute(name: name, value: .ints(values.map(Int64.init)))
  }
  public static func float(_ name: String, _ value: Float) -> Attribute { Attribute(name: name, value: .float(value)) }
}

extension GraphBuilder {
  public mutating func sub(_ a: String, _ b: String) -> String { add("Sub", [a, b]) }
  public mutating func mul(_ a: String, _ b: String) -> String { add("Mul", [a, b]) }
  public mutating func div(_ a: String, _ b: String) -> String { add("Div", [a, b]) }
  public mutating func plus(_ a: String, _ b: String) -> String { add("Add", [a, b]) }
  public mutating func unary(_ op: String, _ x: String) -> String { add(op, [x]) }

  /// `ReduceSum` over `axes` (all axes when nil), through the `axes` input (opset 13+).
  public mutating func reduceSum(_ x: String, axes: [Int]? = nil, keepDims: Bool = false) -> String {
    let inputs = axes.map { [x, ints($0)] } ?? [x]
    return add("ReduceSum", inputs, [.int("keepdims", keepDims ? 1 : 0)])
  }

  /// `Slice` of `[start, end)` along `axis` with step 1.
  public mutating func slice(_ x: String, axis: Int, start: Int, end: Int) -> String {
    add("Slice", [x, ints([start]), ints([end]), ints([axis])])
  }

  /// The columns of a last axis of size `count`, each keeping that axis with size 1.
  public mutating func columns(_ x: String, count: Int, axis: Int = -1) -> [String] {
    (0..<count).map { slice(x, axis: axis, start: $0, end: $0 + 1) }
  }

  /// `Reshape` to a constant shape (0 copies a dim, -1 infers one).
  public mutating func reshape(_ x: String, _ shape: [Int]) -> String { add("Reshape", [x, ints(shape)]) }
}
