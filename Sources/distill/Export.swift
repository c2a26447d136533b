import ArgumentParser
import DistillONNX
import DistillTrain

struct Export: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Write a model back to ONNX (after training: with the weights of a checkpoint).",
    discussion: """
      The graph is written with every field it was read with. Tensors that were in external data stay \
      there, in OUT.data beside the output; so do the largest initializers when the model would pass \
      protobuf's 2 GiB limit. The output is written atomically and never replaces the input.

      With --checkpoint, the checkpoint's trained values (BatchNormalization running statistics \
      included) go into the same initializers and Constant nodes they were trained from; nothing \
      else of the graph changes. A checkpoint whose parameter names, dtypes or shapes differ from \
      the model's is refused, naming the first difference.
      """)

  @Argument(help: "The ONNX model to read.") var model: String
  @Option(name: .long, help: "Where to write the ONNX model.") var out: String
  @Option(name: .long, help: "A training checkpoint whose weights replace the model's.") var checkpoint: String?

  func run() throws {
    var source = try ModelFile.read(model)
    var protected = ModelFile.sourceFiles(of: source, readFrom: model)
    var summary = ""
    if let checkpoint {
      let trained = try Checkpoint.read(checkpoint)
      let applied = try TrainedWeights.apply(trained, to: source, checkpointFile: checkpoint)
      source = applied.model
      protected.append(checkpoint)
      summary = " (\(applied.changed) of \(trained.student.count) parameters changed by \(checkpoint), step \(trained.step))"
    }
    try ModelFile.write(source, to: out, protecting: protected)
    print("wrote \(out)\(summary)")
  }
}
