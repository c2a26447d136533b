import ArgumentParser
import DistillCore
import DistillONNX
import DistillTrain
import Foundation

struct Init: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Draft a commented distill train config for a teacher and a student (printed on standard output).",
    discussion: """
      Matches the models' feature levels by stride with the tap finder, guesses each head's type and \
      outputs from its channel counts, and fills a recommended recipe. Every guess is marked with a \
      `# guessed:` comment. Typical use: distill init TEACHER.onnx STUDENT.onnx --images DIR > distill.yaml
      """)

  @Argument(help: "The teacher ONNX model.") var teacher: String
  @Argument(help: "The student ONNX model.") var student: String
  @Option(name: .long, help: "The training images (a directory of PNG/JPEG); without it, a placeholder to fill in.") var images: String?
  @Option(name: .long, help: "The input size HEIGHTxWIDTH, when the models do not fix it.") var size: String?

  func run() throws {
    var chosen: (height: Int, width: Int)?
    if let size {
      let parts = size.split(separator: "x").compactMap { Int($0) }
      guard parts.count == 2, parts.allSatisfy({ $0 > 0 }) else { throw ValidationError("--size \(size): expected HEIGHTxWIDTH") }
      chosen = (parts[0], parts[1])
    }
    if let images {
      var isDirectory: ObjCBool = false
      guard FileManager.default.fileExists(atPath: images, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw RuntimeError("--images \(images): not a directory")
      }
    }
    let text = try StarterConfig.draft(
      teacher: try ModelFile.read(teacher), teacherPath: teacher, student: try ModelFile.read(student), studentPath: student,
      images: images, size: chosen)
    print(text, terminator: "")
  }
}
