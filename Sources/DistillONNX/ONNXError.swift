/// Why a model could not be read, validated or written. Every message names the file and, where
/// one is at fault, the node or tensor and what is wrong with it.
public enum ONNXError: Error, CustomStringConvertible, Equatable {
  case unreadable(file: String, reason: String)
  case fileTooLarge(file: String, bytes: Int64, limit: Int64)
  case malformed(file: String, detail: String)
  case nestingTooDeep(file: String, offset: Int, limit: Int)
  case missingField(file: String, field: String, hint: String)
  case invalidTensor(file: String, tensor: String, problem: String)
  case invalidNode(file: String, node: String, problem: String)
  case invalidGraph(file: String, graph: String, problem: String)
  case externalData(file: String, tensor: String, problem: String)
  case overBudget(file: String, what: String, bytes: Int64, limit: Int64)
  case writeFailed(file: String, reason: String)
  case refusedOverwrite(file: String)

  public var description: String {
    switch self {
    case .unreadable(let file, let reason):
      return "\(file): cannot read the file: \(reason)"
    case .fileTooLarge(let file, let bytes, let limit):
      return "\(file): the file has \(bytes) bytes, more than the \(limit)-byte limit of a protobuf model; "
        + "keep large weights in external data"
    case .malformed(let file, let detail):
      return "\(file): not a valid ONNX protobuf file: \(detail)"
    case .nestingTooDeep(let file, let offset, let limit):
      return "\(file): message nesting depth exceeds \(limit) at byte \(offset) (nested subgraphs); "
        + "refusing to decode it"
    case .missingField(let file, let field, let hint):
      return "\(file): the model has no \(field)\(hint.isEmpty ? "" : "; \(hint)")"
    case .invalidTensor(let file, let tensor, let problem):
      return "\(file): tensor '\(tensor)': \(problem)"
    case .invalidNode(let file, let node, let problem):
      return "\(file): node \(node): \(problem)"
    case .invalidGraph(let file, let graph, let problem):
      return "\(file): graph '\(graph)': \(problem)"
    case .externalData(let file, let tensor, let problem):
      return "\(file): external data of tensor '\(tensor)': \(problem)"
    case .overBudget(let file, let what, let bytes, let limit):
      return "\(file): \(what) needs \(bytes) bytes, over the memory budget of \(limit) bytes"
    case .writeFailed(let file, let reason):
      return "\(file): cannot write: \(reason)"
    case .refusedOverwrite(let file):
      return "\(file): refusing to overwrite the input model; choose another --out path"
    }
  }
}
