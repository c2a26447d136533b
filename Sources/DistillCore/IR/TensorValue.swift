/// An ONNX `TensorProto`: a constant tensor (initializer, Constant value, attribute) of any dtype.
/// Numeric data is held as packed little-endian bytes whatever field the file used; `encoding`
/// remembers that field so export writes the tensor back the same way.
public struct TensorValue: Sendable {
  public enum Encoding: Sendable, Equatable {
    /// `raw_data`.
    case raw
    /// The typed repeated field for the dtype (`float_data`, `int32_data`, ...).
    case typed
    /// `data_location = EXTERNAL`; `externalData` holds the original key/value entries.
    case external
  }

  public var name: String?
  public var dataType: DataType
  public var dims: [Int64]
  public var bytes: [UInt8]
  /// For dtype string: one entry per element.
  public var strings: [[UInt8]]
  public var encoding: Encoding
  public var externalData: [StringPair]
  public var docString: String?
  public var segment: (begin: Int64, end: Int64)?
  public var unknownFields: [UnknownField] = []

  public init(
    name: String?, dataType: DataType, dims: [Int64], bytes: [UInt8] = [], strings: [[UInt8]] = [],
    encoding: Encoding = .raw
  ) {
    self.name = name
    self.dataType = dataType
    self.dims = dims
    self.bytes = bytes
    self.strings = strings
    self.encoding = encoding
    self.externalData = []
  }

  public var elementCount: Int { dims.reduce(1) { $0 * Int($1) } }
  public var shapeDescription: String { "[" + dims.map(String.init).joined(separator: ",") + "]" }

  /// Element count and byte size for `dims` and `dataType`, or nil if a dim is negative or the
  /// product overflows; strings report 0 bytes.
  public static func checkedSize(dims: [Int64], dataType: DataType) -> (elements: Int64, bytes: Int64)? {
    var count: Int64 = 1
    for dim in dims {
      guard dim >= 0 else { return nil }
      let (product, overflow) = count.multipliedReportingOverflow(by: dim)
      guard !overflow else { return nil }
      count = product
    }
    let (bytes, overflow) = count.multipliedReportingOverflow(by: Int64(dataType.byteSize ?? 0))
    return overflow ? nil : (count, bytes)
  }
}
