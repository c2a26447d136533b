import ArgumentParser
import DistillDetection
import Foundation

/// `distill data`: datasets to distill on.
struct DataCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "data", abstract: "Make datasets to distill on.", subcommands: [Synth.self])

  struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Generate a synthetic shape-detection dataset (PNG pictures and COCO annotations).",
      discussion: """
        Writes DIR/train/*.png, DIR/val/*.png, DIR/train.json and DIR/val.json: ten classes of shapes \
        (circle, square, triangle, star, cross, ring, ellipse, diamond, hexagon, crescent) in twelve colours, \
        8-80 px at --size 320 (most of them COCO-small), on cluttered textured backgrounds, overlapping, \
        among unannotated look-alikes (pentagons, open arcs, sparkles, thin X marks, bars, half discs, blobs). \
        Boxes are the visible extent of each object; objects occluded more than 70% are not annotated. \
        The same arguments give byte-identical files.
        """)

    @Option(name: .long, help: "The directory to write (must be empty or absent unless --overwrite).") var out: String
    @Option(name: .long, help: "Pictures to generate, over both splits.") var images: Int
    @Option(name: .long, help: "The seed; the same seed gives the same files.") var seed: UInt64
    @Option(name: .long, help: "The side of the square pictures in pixels (object sizes scale with it).") var size: Int = 320
    @Option(name: .customLong("val-fraction"), help: "The share of pictures in the val split (the last ones).") var valFraction: Double = 0.2
    @Flag(name: .long, help: "Replace DIR's train/, val/, train.json and val.json when DIR is not empty.") var overwrite = false

    func validate() throws {
      if images < 1 { throw ValidationError("--images \(images): must be at least 1") }
      if !(64...4096).contains(size) { throw ValidationError("--size \(size): must be 64 to 4096") }
      if !(valFraction >= 0 && valFraction < 1) { throw ValidationError("--val-fraction \(valFraction): must be at least 0 and below 1") }
    }

    func run() throws {
      let start = ContinuousClock.now
      let progress = Progress(label: "synth: images", total: images)
      let summary = try SyntheticDataset.generate(
        out: out, images: images, seed: seed, size: size, valFraction: valFraction, overwrite: overwrite,
        progress: { done, _ in progress.update(done) })
      let seconds = (ContinuousClock.now - start) / .seconds(1)
      let perClass = zip(SyntheticDataset.classNames, summary.perClass).map { "\($0) \($1)" }.joined(separator: ", ")
      FileHandle.standardError.write(
        Data(
          String(
            format: "%d objects annotated (%d small), %d too occluded, %d distractors; %@ (%.1f s)\n", summary.annotations, summary.small,
            summary.occluded, summary.distractors, perClass, seconds
          ).utf8))
      print("wrote \(summary.trainImages) train and \(summary.valImages) val pictures to \(out) (train.json, val.json)")
    }
  }
}
