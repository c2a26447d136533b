/// Minimum-cost assignment (the Hungarian method, with row and column potentials, O(n^2 m)).
public enum Hungarian {
  /// For a cost matrix of `rows` x `columns` (row-major, `rows <= columns`), the column assigned to
  /// each row, minimising the total cost; every row gets a distinct column. Costs must be finite.
  public static func assign(_ cost: [Double], rows: Int, columns: Int) -> [Int] {
    precondition(rows <= columns && cost.count == rows * columns, "need rows <= columns and rows * columns costs")
    guard rows > 0 else { return [] }
    // 1-based arrays; column 0 is a sentinel.
    var u = [Double](repeating: 0, count: rows + 1), v = [Double](repeating: 0, count: columns + 1)
    var rowOfColumn = [Int](repeating: 0, count: columns + 1), way = [Int](repeating: 0, count: columns + 1)
    for row in 1...rows {
      rowOfColumn[0] = row
      var column0 = 0
      var minimum = [Double](repeating: .infinity, count: columns + 1)
      var used = [Bool](repeating: false, count: columns + 1)
      repeat {
        used[column0] = true
        let row0 = rowOfColumn[column0]
        var delta = Double.infinity, column1 = 0
        for column in 1...columns where !used[column] {
          let reduced = cost[(row0 - 1) * columns + (column - 1)] - u[row0] - v[column]
          if reduced < minimum[column] {
            minimum[column] = reduced
            way[column] = column0
          }
          if minimum[column] < delta {
            delta = minimum[column]
            column1 = column
          }
        }
        for column in 0...columns {
          if used[column] {
            u[rowOfColumn[column]] += delta
            v[column] -= delta
          } else {
            minimum[column] -= delta
          }
        }
        column0 = column1
      } while rowOfColumn[column0] != 0
      repeat {
        let column1 = way[column0]
        rowOfColumn[column0] = rowOfColumn[column1]
        column0 = column1
      } while column0 != 0
    }
    var assignment = [Int](repeating: -1, count: rows)
    for column in 1...columns where rowOfColumn[column] > 0 { assignment[rowOfColumn[column] - 1] = column - 1 }
    return assignment
  }
}
