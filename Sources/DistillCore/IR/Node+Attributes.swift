extension Node {
  /// The `int` attribute `name`, or nil when absent or of another kind.
  public func intAttribute(_ name: String) -> Int? {
    if case .int(let value)? = attribute(name)?.value { return Int(clamping: value) }
    return nil
  }

  public func intsAttribute(_ name: String) -> [Int]? {
    if case .ints(let values)? = attribute(name)?.value { return values.map { Int(clamping: $0) } }
    return nil
  }

  public func floatAttribute(_ name: String) -> Float? {
    if case .float(let value)? = attribute(name)?.value { return value }
    return nil
  }

  public func floatsAttribute(_ name: String) -> [Float]? {
    if case .floats(let values)? = attribute(name)?.value { return values }
    return nil
  }

  public func stringAttribute(_ name: String) -> String? {
    if case .string(let bytes)? = attribute(name)?.value { return String(decoding: bytes, as: UTF8.self) }
    return nil
  }
}
