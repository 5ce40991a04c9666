# Fails when the checked-in generated codec differs from what tools/amqp_codegen.py produces.
execute_process(COMMAND /usr/bin/python3 ${SOURCE_DIR}/tools/amqp_codegen.py --out ${WORK_DIR}
                RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "amqp_codegen.py failed")
endif()
foreach(name constants.gen.h methods.gen.h methods.gen.cc)
  file(READ ${WORK_DIR}/${name} fresh)
  file(READ ${SOURCE_DIR}/src/amqp/${name} checked_in)
  if(NOT fresh STREQUAL checked_in)
    message(FATAL_ERROR "src/amqp/${name} is stale: run tools/amqp_codegen.py")
  endif()
endforeach()
message(STATUS "generated codec is current")
