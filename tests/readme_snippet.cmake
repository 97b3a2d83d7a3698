# Checks that README.md shows the usage example exactly as tests/test_readme_example.cpp
# compiles it (the lines between the BEGIN/END markers, leading indentation removed).
file(READ ${SOURCE}/tests/test_readme_example.cpp test_text)
string(REGEX MATCH "// BEGIN README EXAMPLE\n(.*)  // END README EXAMPLE" _ "${test_text}")
set(snippet "${CMAKE_MATCH_1}")
string(REGEX REPLACE "(^|\n)  " "\\1" snippet "${snippet}")
file(READ ${SOURCE}/README.md readme)
string(FIND "${readme}" "${snippet}" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "README.md does not contain the usage example of tests/test_readme_example.cpp:\n${snippet}")
endif()
message(STATUS "README example matches tests/test_readme_example.cpp")
