#include "worker/matrix_product.h"

namespace ps::worker {

void Product(const ConstMatrixRef& a, const ConstMatrixRef& b, MatrixRef out) {
  out.noalias() = a * b;
}

void TransposedProduct(const ConstMatrixRef& a, const ConstMatrixRef& b,
                       MatrixRef out) {
  out.noalias() = a.transpose() * b;
}

void ProductTransposed(const ConstMatrixRef& a, const ConstMatrixRef& b,
                       MatrixRef out) {
  out.noalias() = a * b.transpose();
}

}  // namespace ps::worker
