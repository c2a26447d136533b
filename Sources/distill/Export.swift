import ArgumentParser
import DistillONNX

struct Export: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Write a model back to ONNX (after training: with the weights of a checkpoint).",
    discussion: """
      The graph is written with every field it was read with. Tensors that were in external data stay \
      there, in OUT.data beside the output; so do the largest initializers when the model would pass \
      protobuf's 2 GiB limit. The output is written atomically and never replaces the input.
      """)

  @Argument(help: "The ONNX model to read.") var model: String
  @Option(name: .long, help: "Where to write the ONNX model.") var out: String
  @Option(name: .long, help: "A training checkpoint whose weights replace the model's.") var checkpoint: String?

  func run() throws {
    if let checkpoint {
      throw ValidationError(
        "--checkpoint \(checkpoint): this build cannot train yet, so there are no checkpoints to export; "
          + "run without --checkpoint to re-export the model unchanged")
    }
    let source = try ModelFile.read(model)
    try ModelFile.write(source, to: out, protecting: ModelFile.sourceFiles(of: source, readFrom: model))
    print("wrote \(out)")
  }
}
