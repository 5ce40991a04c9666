#include "amqp/errors.h"

#include "amqp/wire.h"

namespace hamq::amqp {

std::string ProtocolError::reply_text() const {
  std::string full(reply_code_name(code));
  if (!text.empty()) {
    full += " - ";
    full += text;
  }
  return truncate_short_string(full);
}

}  // namespace hamq::amqp
