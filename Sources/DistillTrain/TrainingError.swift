/// Why training, a checkpoint or the export of trained weights failed. Messages name the file,
/// the tensor and what is wrong.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
  /// A setting that cannot work (bad regular expression, nothing to train...).
  case invalidConfig(String)
  /// Too many steps in a row had a non-finite loss or gradient; the run stopped.
  case diverged(step: Int, inARow: Int, lastCheckpoint: String?)
  /// A checkpoint file could not be read, written, or did not hold a valid checkpoint.
  case checkpoint(file: String, problem: String)
  /// The checkpoint was written by a run with another configuration.
  case configMismatch(file: String, checkpoint: String, current: String)
  /// Refused to save a tensor holding NaN or infinity.
  case nonFiniteWeights(file: String, tensor: String, index: Int, value: Float)
  /// The checkpoint's tensors do not match the model's parameters.
  case mismatch(String)

  public var description: String {
    switch self {
    case .invalidConfig(let message):
      return message
    case .diverged(let step, let inARow, let last):
      return "stopped at step \(step): \(inARow) steps in a row had a non-finite loss or gradient; "
        + (last.map { "the last good checkpoint is \($0)" } ?? "no checkpoint was written")
    case .checkpoint(let file, let problem):
      return "\(file): \(problem)"
    case .configMismatch(let file, let checkpoint, let current):
      return "\(file): the checkpoint was written with configuration hash \(checkpoint), this run's is \(current); "
        + "resume with the configuration it was written with"
    case .nonFiniteWeights(let file, let tensor, let index, let value):
      return "\(file): refusing to write a checkpoint: tensor '\(tensor)' holds \(value) at element \(index)"
    case .mismatch(let message):
      return message
    }
  }
}
