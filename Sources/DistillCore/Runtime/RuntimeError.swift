/// A failure while preparing or running a graph. Messages name the node, its op and the input at
/// fault: `Conv 'backbone/conv1': input W has 3 dims, expected 4`.
public struct RuntimeError: Error, CustomStringConvertible, Equatable {
  public let message: String
  public init(_ message: String) { self.message = message }
  public var description: String { message }
}
