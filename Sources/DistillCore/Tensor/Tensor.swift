/// A dense, contiguous, row-major tensor as the interpreter computes with it. Floating dtypes
/// (float32, and float16/bfloat16/float64 converted at the edges) live in `floats`; integer and
/// bool dtypes live in `ints` (bool as 0/1, uint64 as its bit pattern). `dtype` is the ONNX type
/// the value has in the graph, so outputs convert back to it.
public struct Tensor: Sendable {
  public var dtype: DataType
  public var shape: [Int]
  public var floats: [Float]
  public var ints: [Int64]
  /// A 4-D float tensor whose `floats` are ordered N, H, W, C (channels last) while `shape` stays
  /// N, C, H, W: the layout oneDNN's convolutions read and write without reordering. Only the
  /// interpreter's inference passes make such tensors, and only operators that declare
  /// `ChannelsLastOperator` see them (`planar()` converts for everything else).
  public var channelsLast = false

  public init(shape: [Int], floats: [Float], dtype: DataType = .float) {
    precondition(shape.reduce(1, *) == floats.count, "shape \(shape) does not hold \(floats.count) values")
    self.dtype = dtype
    self.shape = shape
    self.floats = floats
    self.ints = []
  }

  public init(shape: [Int], ints: [Int64], dtype: DataType = .int64) {
    precondition(shape.reduce(1, *) == ints.count, "shape \(shape) does not hold \(ints.count) values")
    self.dtype = dtype
    self.shape = shape
    self.floats = []
    self.ints = ints
  }

  public init(scalar: Float) { self.init(shape: [], floats: [scalar]) }

  /// A tensor of `shape` filled with zeros of `dtype`.
  public init(zeros shape: [Int], dtype: DataType = .float) {
    let count = shape.reduce(1, *)
    if dtype.isFloatingPoint {
      self.init(shape: shape, floats: [Float](repeating: 0, count: count), dtype: dtype)
    } else {
      self.init(shape: shape, ints: [Int64](repeating: 0, count: count), dtype: dtype)
    }
  }

  public var isFloat: Bool { dtype.isFloatingPoint }
  public var count: Int { isFloat ? floats.count : ints.count }
  public var rank: Int { shape.count }

  /// Row-major strides in elements.
  public var strides: [Int] { Tensor.strides(of: shape) }

  public static func strides(of shape: [Int]) -> [Int] {
    var strides = [Int](repeating: 1, count: shape.count)
    var running = 1
    for axis in stride(from: shape.count - 1, through: 0, by: -1) {
      strides[axis] = running
      running *= shape[axis]
    }
    return strides
  }

  /// Every element as Double (for comparisons and reports).
  public var doubles: [Double] { isFloat ? floats.map(Double.init) : ints.map(Double.init) }

  /// The values as Int64, converting floats by truncation (for shape and index inputs).
  public var asInts: [Int64] { isFloat ? floats.map { Int64($0) } : ints }

  /// The values as Float, converting integers (for float-valued inputs such as Resize scales).
  public var asFloats: [Float] { isFloat ? floats : ints.map { Float($0) } }

  public var shapeDescription: String { "[" + shape.map(String.init).joined(separator: ",") + "]" }

  /// A copy with another shape holding the same elements.
  public func reshaped(_ newShape: [Int]) -> Tensor {
    var copy = self
    copy.shape = newShape
    return copy
  }
}

extension Tensor {
  /// Decodes a constant tensor. Floating types become Float32, integers and bool Int64.
  public init(_ value: TensorValue) throws {
    let shape = value.dims.map { Int($0) }
    let bytes = value.bytes
    func read<T>(_: T.Type) -> [T] {
      bytes.withUnsafeBytes { raw in Array(raw.bindMemory(to: T.self).prefix(shape.reduce(1, *))) }
    }
    switch value.dataType {
    case .float: self.init(shape: shape, floats: read(Float.self), dtype: .float)
    case .double: self.init(shape: shape, floats: read(Double.self).map { Float($0) }, dtype: .double)
    case .float16:
      self.init(shape: shape, floats: read(UInt16.self).map { Float(Float16(bitPattern: $0)) }, dtype: .float16)
    case .bfloat16:
      self.init(shape: shape, floats: read(UInt16.self).map { Float(bitPattern: UInt32($0) << 16) }, dtype: .bfloat16)
    case .int64: self.init(shape: shape, ints: read(Int64.self), dtype: .int64)
    case .int32: self.init(shape: shape, ints: read(Int32.self).map { Int64($0) }, dtype: .int32)
    case .int16: self.init(shape: shape, ints: read(Int16.self).map { Int64($0) }, dtype: .int16)
    case .int8: self.init(shape: shape, ints: read(Int8.self).map { Int64($0) }, dtype: .int8)
    case .uint64: self.init(shape: shape, ints: read(UInt64.self).map { Int64(bitPattern: $0) }, dtype: .uint64)
    case .uint32: self.init(shape: shape, ints: read(UInt32.self).map { Int64($0) }, dtype: .uint32)
    case .uint16: self.init(shape: shape, ints: read(UInt16.self).map { Int64($0) }, dtype: .uint16)
    case .uint8: self.init(shape: shape, ints: read(UInt8.self).map { Int64($0) }, dtype: .uint8)
    case .bool: self.init(shape: shape, ints: read(UInt8.self).map { $0 != 0 ? 1 : 0 }, dtype: .bool)
    default:
      throw RuntimeError("tensor '\(value.name ?? "")' has dtype \(value.dataType), which the interpreter does not compute with")
    }
  }

  /// Encodes back to `dtype` as a constant tensor (raw data), the inverse of `init(_: TensorValue)`.
  public func tensorValue(name: String? = nil) -> TensorValue {
    func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
    let data: [UInt8]
    switch dtype {
    case .float: data = bytes(floats)
    case .double: data = bytes(floats.map { Double($0) })
    case .float16: data = bytes(floats.map { Float16($0).bitPattern })
    case .bfloat16: data = bytes(floats.map { Tensor.bfloat16Bits($0) })
    case .int64: data = bytes(ints)
    case .int32: data = bytes(ints.map { Int32(truncatingIfNeeded: $0) })
    case .int16: data = bytes(ints.map { Int16(truncatingIfNeeded: $0) })
    case .int8: data = bytes(ints.map { Int8(truncatingIfNeeded: $0) })
    case .uint64: data = bytes(ints.map { UInt64(bitPattern: $0) })
    case .uint32: data = bytes(ints.map { UInt32(truncatingIfNeeded: $0) })
    case .uint16: data = bytes(ints.map { UInt16(truncatingIfNeeded: $0) })
    case .uint8, .bool: data = ints.map { UInt8(truncatingIfNeeded: $0) }
    default: data = []
    }
    return TensorValue(name: name, dataType: dtype, dims: shape.map { Int64($0) }, bytes: data)
  }

  /// Round to nearest even, as PyTorch and onnxruntime convert float32 to bfloat16.
  static func bfloat16Bits(_ value: Float) -> UInt16 {
    if value.isNaN { return 0x7FC0 }
    let bits = value.bitPattern
    let rounding = UInt32(0x7FFF) + ((bits >> 16) & 1)
    return UInt16((bits &+ rounding) >> 16)
  }
}
