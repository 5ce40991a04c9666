// What the files of Channel (channel.cc, channel_definitions.cc) share and nothing else needs.
#pragma once

#include <string>
#include <utility>

#include "amqp/errors.h"

namespace hamq::broker::channel_detail {

inline amqp::ProtocolError error(amqp::ReplyCode code, std::string text) {
  return amqp::ProtocolError{code, std::move(text)};
}

}  // namespace hamq::broker::channel_detail
