import ArgumentParser
import DistillCore
import Foundation

@main
struct Distill: ParsableCommand {
  static func main() {
    Memory.keepFreedMemory()
    Self.main(nil)
  }

  static let configuration = CommandConfiguration(
    commandName: "distill",
    abstract: "Distill ONNX object detectors: inspect, run, evaluate, distill and export teacher and student graphs.",
    subcommands: [Demo.self, Inspect.self, Run.self, Bench.self, Eval.self, Predict.self, Init.self, Train.self, Export.self, DataCommand.self])
}

/// Parses `NAME=1x3x320x320`.
struct ShapeArgument: ExpressibleByArgument {
  let name: String
  let dims: [Int]

  init?(argument: String) {
    guard let equals = argument.lastIndex(of: "=") else { return nil }
    let dims = argument[argument.index(after: equals)...].split(separator: "x").map { Int($0) }
    guard !dims.isEmpty, dims.allSatisfy({ ($0 ?? -1) > 0 }) else { return nil }
    self.name = String(argument[..<equals])
    self.dims = dims.map { $0! }
  }

  static var defaultValueDescription: String { "NAME=1x3x320x320" }
}
