// ProtocolError: what went wrong with a peer's input, as the AMQP reply that reports it.
//
// Every malformed frame, method or table maps to exactly one reply code here, in the codec, so
// that the connection only has to decide whether to close the channel (soft error) or the whole
// connection (hard error, is_hard_error in constants.gen.h).
#pragma once

#include <cstdint>
#include <string>

#include "amqp/constants.gen.h"

namespace hamq::amqp {

struct ProtocolError {
  ReplyCode code = ReplyCode::internal_error;
  // The explanation without the constant's name; reply_text() adds it as RabbitMQ does.
  std::string text;
  // The method that failed, 0/0 when none.
  uint16_t class_id = 0;
  uint16_t method_id = 0;

  bool closes_connection() const { return is_hard_error(code); }
  // "NOT_FOUND - no queue 'q' in vhost '/'", cut to the 255 bytes a short string holds.
  std::string reply_text() const;
};

}  // namespace hamq::amqp
